"""Core ML export (``.mlpackage``, ML Program) and its checks.

How a package is built (see :func:`export_coreml`):

1. the :class:`~detector.export.wrapper.ExportWrapper` (BatchNorm folded; raw outputs, or boxes
   and scores for ``decoded``) is captured with ``torch.export.export`` at a fixed batch of 1 and
   decomposed to core ATen ops;
2. ``coremltools.convert`` turns the ``ExportedProgram`` into an ML Program (``mlprogram``,
   minimum deployment target iOS 16 / macOS 13) with one input ``images``: a ``float32``
   ``[1, 3, H, W]`` multi-array, RGB in ``[0, 1]`` (a ``TensorType``, not an ``ImageType``: the
   resize and scaling are the caller's, exactly as for the other formats and as the sidecar says;
   mean/std normalisation is inside the graph). Compute precision is float32 by default
   (``compute_precision="float16"`` gives the half-precision program the Neural Engine prefers;
   its input and outputs stay ``float32``);
3. the package is saved with the stage and output order in its user metadata (class names and
   the rest of what a runtime needs are in the sidecar).

A ``decoded`` program returns ``boxes``, ``scores`` and then the raw ``box_deltas`` and
``class_logits`` they are decoded from, so verification can read the raw outputs of the very
artifact it checks (the order is recorded in the sidecar, ``export.outputs``).

Core ML models only run on Apple platforms: on Linux ``MLModel.predict`` is not available. There
:func:`check_coreml_spec` checks the converted specification instead (program type, input and
output names, shapes and dtypes as the sidecar says, one ``conv`` per convolution of the
network, the decoding ops for ``decoded``); the numerical comparison with PyTorch needs macOS,
where :class:`CoreMLRunner` runs ``predict`` and the normal verification applies.

Not supported: in-graph NMS (data-dependent output size), int8 (activation calibration would have
to run the model, i.e. macOS) and a free batch dimension; :data:`detector.export.FORMATS` rejects
those requests before any work.
"""

from __future__ import annotations

import json
import platform
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .config import PRECISIONS
from .errors import ExportError
from .registry import ExportFormat, ExportJob, register
from .verify import Verdict
from .wrapper import program_module, program_output_names

if TYPE_CHECKING:
    from ..models import SSD
    from .config import ExportConfig

__all__ = [
    "CoreMLRunner",
    "can_run_coreml",
    "check_coreml_spec",
    "coreml_output_names",
    "export_coreml",
    "spec_verdict",
]

#: ML Program dtype enum names (``ArrayFeatureType``) of the sidecar dtypes.
_DTYPES = {"float32": "FLOAT32", "float16": "FLOAT16", "int32": "INT32"}


def coreml_output_names(stage: str) -> list[str]:
    """Names of the program's outputs for ``stage``, in order."""
    return program_output_names(stage, "coreml")


def _num_convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def export_coreml(
    model: nn.Module,
    path: str | Path,
    *,
    stage: str = "raw",
    post: dict[str, Any] | None = None,
    compute_precision: str = "float32",
) -> dict[str, Any]:
    """Export an SSD to a Core ML ML Program package (``.mlpackage``).

    Args:
        model: the :class:`~detector.models.SSD` (eval mode; not modified).
        path: the ``.mlpackage`` to write (a folder; replaced if it exists).
        stage: ``"raw"`` or ``"decoded"``.
        post: post-processing settings for ``decoded`` (only ``clip_boxes`` affects the graph).
        compute_precision: ``"float32"`` or ``"float16"``.

    Returns:
        Facts for the sidecar: ``exporter``, ``outputs``, ``compute_precision``,
        ``minimum_deployment_target``, ``num_conv``, ``int8``, ``coremltools_version``.

    Raises:
        ExportError: unknown stage or precision, or the conversion failed.
    """
    import shutil

    import coremltools as ct

    if compute_precision not in PRECISIONS:
        raise ExportError(
            f"unknown Core ML compute_precision {compute_precision!r}; choose one of {PRECISIONS}"
        )
    names = coreml_output_names(stage)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = program_module(model, stage, post)
    h, w = model.image_size
    example = (torch.rand(1, 3, h, w),)
    precision = ct.precision.FLOAT32 if compute_precision == "float32" else ct.precision.FLOAT16
    target = ct.target.iOS16
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, example).run_decompositions({})
            mlmodel = ct.convert(
                program,
                inputs=[ct.TensorType(name="images", shape=(1, 3, h, w), dtype=np.float32)],
                outputs=[ct.TensorType(name=n, dtype=np.float32) for n in names],
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=precision,
            )
    except Exception as exc:  # torch.export / coremltools raise many kinds of errors
        raise ExportError(f"Core ML conversion failed: {type(exc).__name__}: {exc}") from exc
    mlmodel.short_description = f"MobileNet-SSD detector ({stage} outputs) exported by detector"
    mlmodel.input_description["images"] = (
        f"RGB image resized to {w}x{h}, float32 in [0, 1], NCHW (batch 1)"
    )
    meta = mlmodel.user_defined_metadata
    meta["detector.stage"] = stage
    meta["detector.outputs"] = json.dumps(names)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    mlmodel.save(str(path))
    return {
        "exporter": "torch.export + coremltools.convert (mlprogram)",
        "outputs": names,
        "compute_precision": compute_precision,
        "minimum_deployment_target": "iOS16 / macOS13",
        "num_conv": _num_convs(model),
        "int8": False,
        "coremltools_version": ct.__version__,
    }


# ------------------------------------------------------------------------------ spec checks
def _program_ops(spec) -> Counter:
    ops: Counter = Counter()

    def walk(block) -> None:
        for op in block.operations:
            ops[op.type] += 1
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            walk(block)
    return ops


def _feature(feature) -> tuple[list[int], str]:
    array = feature.type.multiArrayType
    from coremltools.proto import FeatureTypes_pb2

    dtype = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(array.dataType)
    return [int(d) for d in array.shape], dtype


def _conv_weights(path: str | Path) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """``(weight, bias)`` of every ``conv`` op of a saved ML Program, read back from the package."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    program = load_milproto(
        spec,
        specification_version=spec.specificationVersion,
        file_weights_dir=mlmodel.weights_dir,
    )
    convs = []
    for function in program.functions.values():
        for op in function.operations:
            if op.op_type == "conv":
                bias = None if op.bias is None else np.asarray(op.bias.val, np.float32)
                convs.append((np.asarray(op.weight.val, np.float32), bias))
    return convs


def _check_weights(path: str | Path, model: nn.Module, tolerance: float) -> tuple[bool, str]:
    """Every convolution of the BatchNorm-folded ``model`` has a ``conv`` op in the package with
    the same weights and bias (within ``tolerance`` of the largest weight); one op per conv."""
    import copy

    from .wrapper import fold_batchnorm

    net = fold_batchnorm(copy.deepcopy(model).eval())
    reference = [
        (m.weight.detach().numpy(), None if m.bias is None else m.bias.detach().numpy())
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    candidates = _conv_weights(path)
    if len(candidates) != len(reference):
        return False, f"{len(candidates)} conv ops for {len(reference)} convolutions"
    used = [False] * len(candidates)
    worst = 0.0
    for weight, bias in reference:
        best, best_j = np.inf, -1
        for j, (w, b) in enumerate(candidates):
            if used[j] or w.shape != weight.shape:
                continue
            diff = float(np.abs(w - weight).max())
            if bias is not None:
                diff = max(diff, float(np.abs((b if b is not None else 0.0) - bias).max()))
            if diff < best:
                best, best_j = diff, j
        scale = max(1.0, float(np.abs(weight).max()))
        if best_j < 0 or best > tolerance * scale:
            return False, f"no conv op holds the weights of a {list(weight.shape)} convolution"
        used[best_j] = True
        worst = max(worst, best)
    return True, f"max diff {worst:.2g}"


def check_coreml_spec(
    path: str | Path,
    sidecar: dict[str, Any],
    *,
    num_conv: int | None = None,
    model: nn.Module | None = None,
) -> tuple[list[str], list[str], dict[str, int]]:
    """Check a saved ``.mlpackage`` against its sidecar without running it (works on Linux).

    Checks: the package is an ML Program; its only input is named as the sidecar's input with its
    shape and ``float32``; its outputs are :func:`coreml_output_names` of the sidecar's stage in
    that order, each sidecar output with the sidecar's shape and dtype, the raw outputs of a
    ``decoded`` program with the raw shapes; ``conv`` ops are present (exactly ``num_conv`` when
    given); a ``decoded`` program holds ``exp`` and the sidecar's score function; with ``model``,
    the weights and biases of the ``conv`` ops read back from the package equal those of the
    BatchNorm-folded PyTorch convolutions (to float rounding, or half precision for a float16
    program).

    Args:
        path: the ``.mlpackage``.
        sidecar: its sidecar dict.
        num_conv: convolutions of the exported network (``export.num_conv`` of the sidecar when
            None).
        model: the PyTorch :class:`~detector.models.SSD` the package was exported from.

    Returns:
        ``(passed_checks, failures, op_counts)``.
    """
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    passed: list[str] = []
    failures: list[str] = []

    def check(ok: bool, what: str, detail: str = "") -> None:
        (passed if ok else failures).append(what if ok or not detail else f"{what}: {detail}")

    check(
        spec.WhichOneof("Type") == "mlProgram",
        "model type is mlProgram",
        f"got {spec.WhichOneof('Type')}",
    )
    want_in = sidecar["input"]
    inputs = list(spec.description.input)
    check(
        [i.name for i in inputs] == [want_in["name"]],
        f"single input {want_in['name']!r}",
        f"got {[i.name for i in inputs]}",
    )
    if inputs:
        shape, dtype = _feature(inputs[0])
        check(
            shape == [int(v) for v in want_in["shape"]],
            f"input shape {want_in['shape']}",
            f"got {shape}",
        )
        check(dtype == "FLOAT32", "input dtype float32", f"got {dtype}")
    stage = sidecar["stage"]
    names = coreml_output_names(stage)
    outputs = {o.name: o for o in spec.description.output}
    check(list(outputs) == names, f"outputs {names}", f"got {list(outputs)}")
    expected = {o["name"]: (o["shape"], o["dtype"]) for o in sidecar["outputs"]}
    if stage == "decoded":  # the raw tensors the boxes and scores are decoded from
        anchors, columns = expected["scores"][0][1], expected["scores"][0][2]
        expected["box_deltas"] = ([1, anchors, 4], "float32")
        expected["class_logits"] = ([1, anchors, columns], "float32")
    for name, (shape, dtype) in expected.items():
        if name not in outputs:
            failures.append(f"output {name!r} missing")
            continue
        got_shape, got_dtype = _feature(outputs[name])
        check(got_shape == [int(v) for v in shape], f"{name} shape {shape}", f"got {got_shape}")
        check(
            got_dtype == _DTYPES.get(dtype, dtype.upper()),
            f"{name} dtype {dtype}",
            f"got {got_dtype}",
        )
    ops = _program_ops(spec) if spec.WhichOneof("Type") == "mlProgram" else Counter()
    want_conv = num_conv if num_conv is not None else sidecar.get("export", {}).get("num_conv")
    if want_conv is not None:
        check(ops["conv"] == int(want_conv), f"{want_conv} conv ops", f"got {ops['conv']}")
    else:
        check(ops["conv"] > 0, "conv ops present", "none found")
    if stage == "decoded":
        score_op = "softmax" if sidecar["scores"]["score_fn"] == "softmax" else "sigmoid"
        check(ops["exp"] > 0, "box decoding (exp) present", "no exp op")
        check(ops[score_op] > 0, f"score function ({score_op}) present", f"no {score_op} op")
    if model is not None:
        half = sidecar.get("export", {}).get("compute_precision") == "float16"
        ok, detail = _check_weights(path, model, 2e-3 if half else 1e-6)
        check(ok, f"conv weights equal PyTorch's (folded BatchNorm; {detail})", detail)
    return passed, failures, dict(sorted(ops.items()))


def can_run_coreml() -> bool:
    """Whether Core ML models can be run here (macOS with coremltools' native library)."""
    if platform.system() != "Darwin":
        return False
    try:
        from coremltools import libcoremlpython  # noqa: F401
    except ImportError:
        return False
    return True


def spec_verdict(
    path: str | Path,
    sidecar: dict[str, Any],
    *,
    model: nn.Module | None = None,
    precision: str = "fp32",
) -> Verdict:
    """A :class:`~detector.export.verify.Verdict` from :func:`check_coreml_spec` alone (no
    outputs are compared: Core ML models only run on Apple platforms)."""
    passed, failures, ops = check_coreml_spec(path, sidecar, model=model)
    note = (
        "spec checked only; the numerical check needs macOS (Core ML cannot run on "
        f"{platform.system()}): re-run the export there, or run CoreMLRunner on the package"
    )
    return Verdict(
        precision=precision,
        runtime="Core ML spec check (no runtime on this platform)",
        num_images=0,
        image_source="none",
        max_abs_diff={},
        output_scale={},
        num_reference=0,
        num_matched=0,
        agreement=None,
        min_score=0.0,
        iou=0.0,
        min_agreement=None,
        raw_tolerance=None,
        passed=not failures,
        failures=failures,
        checks=[*passed, f"ops: {ops}"],
        note=note,
    )


class CoreMLRunner:
    """A ``.mlpackage`` run with ``MLModel.predict`` (macOS only).

    Args:
        path: the package.
        stage: the program's stage (``"raw"`` or ``"decoded"``), which names its outputs.
        compute_units: ``coremltools.ComputeUnit`` name (``CPU_ONLY`` for verification).

    Calling it with ``float32 [N, 3, H, W]`` returns the outputs by name; the program has a fixed
    batch of 1, so images are run one at a time.

    Raises:
        ExportError: Core ML cannot run on this platform.
    """

    def __init__(
        self, path: str | Path, *, stage: str = "raw", compute_units: str = "CPU_ONLY"
    ) -> None:
        import coremltools as ct

        if not can_run_coreml():
            raise ExportError(
                f"Core ML models cannot run on {platform.system()}; the numerical check needs "
                "macOS (check_coreml_spec checks the package here)"
            )
        self.output_names = coreml_output_names(stage)
        self.model = ct.models.MLModel(
            str(path), compute_units=getattr(ct.ComputeUnit, compute_units)
        )

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        images = np.ascontiguousarray(images, dtype=np.float32)
        chunks: list[list[np.ndarray]] = []
        for i in range(images.shape[0]):
            out = self.model.predict({"images": images[i : i + 1]})
            chunks.append([np.asarray(out[n], dtype=np.float32) for n in self.output_names])
        return {n: np.concatenate([c[j] for c in chunks]) for j, n in enumerate(self.output_names)}


# ------------------------------------------------------------------------------ registry entry
def _export(job: ExportJob) -> dict[str, Any]:
    precision = job.config.format.compute_precision
    return export_coreml(job.model, job.path, **job.graph_options(), compute_precision=precision)


def _runner(path: Path, config: ExportConfig) -> CoreMLRunner:
    return CoreMLRunner(path, stage=config.stage)


def _static_check(
    path: Path, sidecar: dict[str, Any], model: SSD, precision: str
) -> Verdict | None:
    """The spec check where Core ML cannot run (Linux); None on macOS (run and compare)."""
    if can_run_coreml():
        _, failures, _ = check_coreml_spec(path, sidecar, model=model)
        if failures:
            raise ExportError(f"{path.name}: Core ML spec check failed: {'; '.join(failures)}")
        return None
    return spec_verdict(path, sidecar, model=model, precision=precision)


register(
    ExportFormat(
        name="coreml",
        suffix=".mlpackage",
        runtime="Core ML (macOS only)",
        stages=("raw", "decoded"),
        requires=("coremltools",),
        install="pip install coremltools",
        notes="coremltools from torch.export (ML Program); on Linux the spec is checked, the "
        "numerical check needs macOS",
        export=_export,
        runner=_runner,
        static_check=_static_check,
    )
)
