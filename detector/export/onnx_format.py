"""ONNX export (``.onnx``, verified with ONNX Runtime) and its registry entry.

How a graph is built (see :func:`export_onnx`):

1. the network (``images -> box_deltas, class_logits``) is exported on its own, BatchNorm folded;
2. for ``int8`` it is quantized with ONNX Runtime static QDQ quantization over calibration images
   (:mod:`detector.export.onnx_quantize`; only the network is quantized: box decoding, scores and
   NMS stay float);
3. for ``decoded``/``nms`` the post-processing (:class:`~detector.export.wrapper.Postprocess`) is
   exported as a second graph whose inputs are ``box_deltas`` and ``class_logits``, and the two
   graphs are joined into one (:mod:`detector.export.onnx_join`). The joined graph keeps the
   tensors ``box_deltas`` and ``class_logits`` under those names, so verification
   (:class:`~detector.export.onnx_runner.OnnxRunner`) can read the raw outputs of the very
   artifact it checks.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript) is the default.
It gives a clean graph (Conv/Clip/Transpose/Reshape/Concat for the network) and maps the custom
NMS op to ``NonMaxSuppression`` through ``custom_translation_table``. ``exporter="torchscript"``
selects the legacy TorchScript exporter (deprecated in PyTorch), with a symbolic function for the
same op; ``"auto"`` tries dynamo first and falls back to TorchScript with a warning.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .config import QuantizationConfig
from .errors import ExportError
from .onnx_join import join_graphs
from .onnx_quantize import quantization_facts, quantize_onnx
from .registry import ExportFormat, ExportJob, register
from .wrapper import RAW_NAMES, Postprocess, fold_batchnorm

if TYPE_CHECKING:
    from .config import ExportConfig
    from .onnx_runner import OnnxRunner

__all__ = ["DEFAULT_OPSET", "EXPORTERS", "export_graph", "export_onnx"]

EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18
#: Largest batch a dynamic-batch graph is traced for (torch.export needs a finite range).
MAX_DYNAMIC_BATCH = 4096


# ------------------------------------------------------------------------------- NMS translation
def _nms_onnxscript(
    boxes, scores, max_output_per_class: int, iou_threshold: float, score_threshold: float
):
    from onnxscript import opset18 as op

    return op.NonMaxSuppression(
        boxes,
        scores,
        op.Constant(value_ints=[max_output_per_class]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]),
        center_point_box=0,
    )


_SYMBOLIC_REGISTERED: set[int] = set()


def _register_torchscript_symbolic(opset: int) -> None:
    if opset in _SYMBOLIC_REGISTERED:
        return
    from torch.onnx import register_custom_op_symbolic, symbolic_helper

    @symbolic_helper.parse_args("v", "v", "i", "f", "f")
    def nms_symbolic(g, boxes, scores, max_out, iou, thresh):
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([thresh], dtype=torch.float32)),
        )

    register_custom_op_symbolic("detector_export::nms", nms_symbolic, opset)
    _SYMBOLIC_REGISTERED.add(opset)


# -------------------------------------------------------------------------------------- export
def export_graph(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    *,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
) -> tuple[Any, str]:
    """Export ``module`` to an ``onnx.ModelProto``.

    Returns:
        ``(model_proto, exporter_used)`` with ``exporter_used`` ``"dynamo"`` or ``"torchscript"``.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown ONNX exporter {exporter!r}; choose one of {EXPORTERS}")
    module = module.eval()
    errors: list[str] = []
    if exporter in ("auto", "dynamo"):
        try:
            return _export_dynamo(
                module, example_inputs, input_names, output_names, dynamic_batch, opset
            ), "dynamo"
        except Exception as exc:  # the exporter raises many kinds of errors
            if exporter == "dynamo":
                raise ExportError(f"torch.onnx dynamo export failed: {exc}") from exc
            errors.append(f"dynamo: {type(exc).__name__}: {exc}")
            warnings.warn(
                f"dynamo ONNX export failed ({type(exc).__name__}: {exc}); "
                "falling back to the TorchScript exporter",
                stacklevel=2,
            )
    try:
        return _export_torchscript(
            module, example_inputs, input_names, output_names, dynamic_batch, opset
        ), "torchscript"
    except Exception as exc:
        errors.append(f"torchscript: {type(exc).__name__}: {exc}")
        raise ExportError("ONNX export failed:\n  " + "\n  ".join(errors)) from exc


def _export_dynamo(module, example_inputs, input_names, output_names, dynamic_batch, opset):
    dynamic_shapes = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
        dynamic_shapes = {name: {0: batch} for name in _forward_arg_names(module, len(input_names))}
    with warnings.catch_warnings(), _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx"):
        warnings.simplefilter("ignore")  # exporter chatter (axis renames, attribute types)
        program = torch.onnx.export(
            module,
            example_inputs,
            dynamo=True,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table={torch.ops.detector_export.nms.default: _nms_onnxscript},
            optimize=True,
            verbose=False,
        )
    model = program.model_proto
    _rename_dynamic_dims(model, "batch" if dynamic_batch else None)
    return model


@contextlib.contextmanager
def _quiet_loggers(*names: str, level: int = logging.ERROR):
    """Silence the exporter's optimisation logs (shown at INFO under Hydra's logging setup)."""
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, lvl in zip(loggers, old):
            lg.setLevel(lvl)


def _export_torchscript(module, example_inputs, input_names, output_names, dynamic_batch, opset):
    import io

    import onnx

    _register_torchscript_symbolic(opset)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example_inputs,
            buffer,
            dynamo=False,
            input_names=list(input_names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    return onnx.load_from_string(buffer.getvalue())


def _forward_arg_names(module: nn.Module, count: int) -> list[str]:
    import inspect

    params = list(inspect.signature(module.forward).parameters)
    return params[:count]


def _rename_dynamic_dims(model, name: str | None) -> None:
    """Give every symbolic dimension of the graph inputs/outputs the name ``name``.

    Only the batch dimension is symbolic in our graphs; the exporter calls it ``s0`` or ``batch``
    depending on the version. Data-dependent sizes inside the graph are left alone.
    """
    if name is None:
        return
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param"):
            dims[0].dim_param = name


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    stage: str = "raw",
    post: Postprocess | None = None,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
    calibration: Iterable[np.ndarray] | None = None,
    quantization: QuantizationConfig | None = None,
    fp32_path: str | Path | None = None,
) -> dict[str, Any]:
    """Export an SSD to ``path``; optionally quantize the network to int8.

    Args:
        model: the :class:`~detector.models.SSD` (eval mode; not modified).
        path: the ``.onnx`` file to write.
        stage: ``"raw"``, ``"decoded"`` or ``"nms"``.
        post: the :class:`Postprocess` for ``decoded``/``nms``.
        dynamic_batch: leave the batch dimension free (named ``batch``).
        opset: ONNX opset.
        exporter: ``"auto"``, ``"dynamo"`` or ``"torchscript"``.
        calibration: when given, quantize to int8 with these ``float32 [N, 3, H, W]`` batches.
        quantization: int8 settings (None: the defaults of :class:`QuantizationConfig`).
        fp32_path: for int8, also keep the float graph here (same stage).

    Returns:
        Facts for the sidecar: ``exporter``, ``opset``, ``int8``, ``fp32_file``.
    """
    import copy

    import onnx

    if stage != "raw" and post is None:
        raise ExportError(f"stage {stage!r} needs a Postprocess module")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = fold_batchnorm(copy.deepcopy(model).eval())
    h, w = model.image_size
    batch = 2 if dynamic_batch else 1
    images = torch.rand(batch, 3, h, w)
    net_proto, used = export_graph(
        net,
        (images,),
        ["images"],
        list(RAW_NAMES),
        dynamic_batch=dynamic_batch,
        opset=opset,
        exporter=exporter,
    )
    post_proto = None
    if stage != "raw":
        with torch.no_grad():
            deltas, logits = net(images)
        names = (
            ["boxes", "scores"] if stage == "decoded" else ["boxes", "scores", "labels", "count"]
        )
        post_proto, _ = export_graph(
            post.eval(),
            (deltas, logits),
            list(RAW_NAMES),
            names,
            dynamic_batch=dynamic_batch,
            opset=opset,
            exporter=used,
        )
    facts: dict[str, Any] = {"exporter": used, "opset": opset, "int8": calibration is not None}
    if calibration is not None:
        fp32_net = net_proto
        settings = quantization or QuantizationConfig()
        net_proto = quantize_onnx(net_proto, calibration, settings)
        facts["quantization"] = quantization_facts(settings)
        if fp32_path is not None:
            fp32 = fp32_net if post_proto is None else join_graphs(fp32_net, post_proto)
            onnx.save(fp32, str(fp32_path))
            facts["fp32_file"] = Path(fp32_path).name
    final = net_proto if post_proto is None else join_graphs(net_proto, post_proto)
    final.doc_string = f"MobileNet-SSD detector ({stage} outputs) exported by detector"
    onnx.save(final, str(path))
    return facts


# ------------------------------------------------------------------------------ registry entry
def _export(job: ExportJob) -> dict[str, Any]:
    config, model = job.config, job.model
    post = None
    if config.stage != "raw":
        post = Postprocess(
            model.anchors,
            stage=config.stage,
            score_fn=model.score_fn,
            **config.postprocess_settings(),
        )
    return export_onnx(
        model,
        job.path,
        stage=config.stage,
        post=post,
        dynamic_batch=config.dynamic_batch,
        opset=config.format.opset,
        exporter=config.format.exporter,
        calibration=job.calibration,
        quantization=config.format,
        fp32_path=job.fp32_path,
    )


def _runner(path: Path, config: ExportConfig) -> OnnxRunner:
    from .onnx_runner import OnnxRunner

    return OnnxRunner(path, threads=config.threads, raw_outputs=True)


register(
    ExportFormat(
        name="onnx",
        suffix=".onnx",
        runtime="onnxruntime",
        stages=("raw", "decoded", "nms"),
        int8=True,
        dynamic_batch=True,
        requires=("onnx", "onnxruntime", "onnxscript"),
        install="pip install 'detector[export]'  (onnx, onnxruntime, onnxscript)",
        notes="torch.onnx dynamo exporter; NMS as ONNX NonMaxSuppression; int8 = ORT static QDQ",
        export=_export,
        runner=_runner,
        batch_size=lambda config: 4 if config.dynamic_batch else 1,
    )
)
