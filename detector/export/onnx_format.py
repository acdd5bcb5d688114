"""ONNX export, int8 quantization and the ONNX Runtime runner.

How a graph is built (see :func:`export_onnx`):

1. the network (``images -> box_deltas, class_logits``) is exported on its own, BatchNorm folded;
2. for ``int8`` it is quantized with ONNX Runtime static QDQ quantization over calibration images
   (only the network is quantized: box decoding, scores and NMS stay float);
3. for ``decoded``/``nms`` the post-processing (:class:`~detector.export.wrapper.Postprocess`) is
   exported as a second graph whose inputs are ``box_deltas`` and ``class_logits``, and the two
   graphs are joined into one. The joined graph keeps the tensors ``box_deltas`` and
   ``class_logits`` under those names, so verification can read the raw outputs of the very
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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .formats import ExportError
from .wrapper import RAW_NAMES, Postprocess, fold_batchnorm

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "OnnxRunner",
    "export_graph",
    "export_onnx",
    "join_graphs",
    "quantize_onnx",
]

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


def join_graphs(net, post):
    """One graph from ``net`` (``images -> box_deltas, class_logits``) and ``post`` (those two
    tensors in, detections out).

    The names inside ``post`` are prefixed so nothing collides; its inputs keep their names and so
    connect to ``net``'s outputs, which remain in the graph as internal tensors.
    """
    import onnx
    from onnx import helper

    if [i.name for i in post.graph.input] != list(RAW_NAMES):
        raise ExportError(f"post-processing graph inputs must be {RAW_NAMES}")
    keep = set(RAW_NAMES) | {o.name for o in post.graph.output}

    def rename(name: str) -> str:
        return name if (not name or name in keep) else f"post/{name}"

    nodes = []
    for node in post.graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = f"post/{node.name}" if node.name else ""
        new.input[:] = [rename(n) for n in node.input]
        new.output[:] = [rename(n) for n in node.output]
        _rename_subgraphs(new, rename)
        nodes.append(new)
    initializers = []
    for init in post.graph.initializer:
        new = onnx.TensorProto()
        new.CopyFrom(init)
        new.name = rename(init.name)
        initializers.append(new)
    value_info = []
    for vi in post.graph.value_info:
        new = onnx.ValueInfoProto()
        new.CopyFrom(vi)
        new.name = rename(vi.name)
        value_info.append(new)
    graph = helper.make_graph(
        [*net.graph.node, *nodes],
        net.graph.name or "detector",
        inputs=list(net.graph.input),
        outputs=list(post.graph.output),
        initializer=[*net.graph.initializer, *initializers],
        value_info=[*net.graph.value_info, *net.graph.output, *value_info],
    )
    opsets: dict[str, int] = {}
    for imp in [*net.opset_import, *post.opset_import]:
        opsets[imp.domain] = max(opsets.get(imp.domain, 0), imp.version)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
        producer_name=net.producer_name or "detector",
        producer_version=net.producer_version,
    )
    model.ir_version = max(net.ir_version, post.ir_version)
    model.functions.extend([*net.functions, *post.functions])
    onnx.checker.check_model(model)
    return model


def _rename_subgraphs(node, rename: Callable[[str], str]) -> None:
    # Our post-processing graph has no control flow; refuse rather than mis-rename if it ever does.
    for attr in node.attribute:
        if attr.g.node or len(attr.graphs):
            raise ExportError(f"cannot join graphs: node {node.name} has a subgraph")


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
    quant: dict[str, Any] | None = None,
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
        quant: options of :func:`quantize_onnx`.
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
        net_proto = quantize_onnx(net_proto, calibration, **(quant or {}))
        facts["quantization"] = quantization_facts(quant or {})
        if fp32_path is not None:
            fp32 = fp32_net if post_proto is None else join_graphs(fp32_net, post_proto)
            onnx.save(fp32, str(fp32_path))
            facts["fp32_file"] = Path(fp32_path).name
    final = net_proto if post_proto is None else join_graphs(net_proto, post_proto)
    final.doc_string = f"MobileNet-SSD detector ({stage} outputs) exported by detector"
    onnx.save(final, str(path))
    return facts


# -------------------------------------------------------------------------------- quantization
QUANT_DEFAULTS: dict[str, Any] = {
    "per_channel": True,
    "activation_type": "uint8",
    "weight_type": "int8",
    "calibrate_method": "minmax",
    "op_types": None,
    "quant_format": "qdq",
    "exclude": [],
    "symmetric_activations": False,
}

#: ``quant_format`` values and ONNX Runtime's names for them.
QUANT_FORMATS = {"qdq": "QDQ", "qoperator": "QOperator"}
#: Named node groups ``quantize_onnx(exclude=...)`` keeps in float (see :func:`excluded_nodes`).
EXCLUDE_GROUPS = ("first_conv", "predictors", "outputs")


def quantization_facts(quant: dict[str, Any]) -> dict[str, Any]:
    facts = {**QUANT_DEFAULTS, **quant}
    facts["exclude"] = list(facts.get("exclude") or [])
    facts["format"] = QUANT_FORMATS.get(str(facts["quant_format"]), str(facts["quant_format"]))
    facts["scope"] = "network only (decode, scores and NMS stay float32)"
    return facts


class _DropMessages(logging.Filter):
    """Drops log records starting with a given text (ONNX Runtime's pre-processing hint: BatchNorm
    is already folded and shapes are static)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


class _ImageReader:
    """``onnxruntime.quantization.CalibrationDataReader`` over image batches."""

    def __init__(self, batches: Iterable[np.ndarray], input_name: str = "images") -> None:
        self._batches = iter(batches)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: np.ascontiguousarray(batch, np.float32)}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_onnx(
    model,
    calibration: Iterable[np.ndarray],
    *,
    per_channel: bool = True,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    calibrate_method: str = "minmax",
    op_types: Sequence[str] | None = None,
    quantize_head: bool = True,
    quant_format: str = "qdq",
    exclude: Sequence[str] = (),
    symmetric_activations: bool = False,
    extra_options: dict[str, Any] | None = None,
):
    """Static int8 quantization of a float ONNX network (ONNX Runtime).

    Args:
        model: ``onnx.ModelProto`` of the network (``images -> box_deltas, class_logits``).
        calibration: ``float32 [N, 3, H, W]`` image batches in ``[0, 1]``.
        per_channel: per-output-channel weight scales (better for depthwise convolutions).
        activation_type, weight_type: ``"uint8"`` or ``"int8"`` (U8S8 is ONNX Runtime's choice
            for x86 CPUs).
        calibrate_method: ``"minmax"``, ``"entropy"`` or ``"percentile"``.
        op_types: operator types to quantize (None: everything ONNX Runtime can).
        quantize_head: quantize the box/class predictor convolutions too (False keeps them and
            everything after them float; the same as ``exclude=["predictors"]``).
        quant_format: ``"qdq"`` (QuantizeLinear/DequantizeLinear pairs around float ops, fused by
            ONNX Runtime into int8 kernels) or ``"qoperator"`` (QLinearConv & co. written out).
        exclude: node groups kept in float (see :func:`excluded_nodes`): ``"first_conv"``,
            ``"predictors"`` (predictor convolutions and all after them), ``"outputs"`` (only the
            transposes, reshapes and concatenations after the predictors, so the head outputs are
            not re-quantized to one shared scale), or exact node names.
        symmetric_activations: symmetric activation ranges (ONNX Runtime's
            ``ActivationSymmetric``).
        extra_options: more ``quantize_static`` ``extra_options`` (e.g. ``WeightSymmetric``).

    Returns:
        The quantized ``onnx.ModelProto``.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    for label, value, table in (
        ("activation_type", activation_type, types),
        ("weight_type", weight_type, types),
        ("calibrate_method", calibrate_method, methods),
    ):
        if value not in table:
            raise ExportError(f"unknown {label} {value!r}; choose one of {sorted(table)}")

    class Reader(_ImageReader, CalibrationDataReader):
        pass

    if quant_format not in QUANT_FORMATS:
        raise ExportError(
            f"unknown quant_format {quant_format!r}; choose one of {sorted(QUANT_FORMATS)}"
        )
    groups = [*exclude, *([] if quantize_head else ["predictors"])]
    excluded = excluded_nodes(model, groups) or None
    extra = {"ActivationSymmetric": bool(symmetric_activations), **(extra_options or {})}

    root_logger = logging.getLogger()
    hint_filter = _DropMessages("Please consider")
    root_logger.addFilter(hint_filter)
    with tempfile.TemporaryDirectory(prefix="detector_quant_") as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        reader = Reader(calibration, model.graph.input[0].name)
        quantize_static(
            str(src),
            str(dst),
            reader,
            quant_format=getattr(QuantFormat, QUANT_FORMATS[quant_format]),
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=per_channel,
            activation_type=types[activation_type],
            weight_type=types[weight_type],
            calibrate_method=methods[calibrate_method],
            nodes_to_exclude=excluded,
            extra_options=extra,
        )
        quantized = onnx.load(str(dst))
    root_logger.removeFilter(hint_filter)
    if not any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in quantized.graph.node):
        raise ExportError("int8 quantization produced no quantized nodes")
    return quantized


def excluded_nodes(model, groups: Sequence[str]) -> list[str]:
    """Node names of a network graph that ``groups`` name (see :data:`EXCLUDE_GROUPS`).

    Args:
        model: ``onnx.ModelProto`` of the network.
        groups: ``"first_conv"`` (the stem convolution), ``"predictors"`` (the predictor
            convolutions and every node after them), ``"outputs"`` (the nodes after the predictor
            convolutions: transposes, reshapes, concatenations), or exact node names.

    Raises:
        ExportError: a name that is neither a group nor a node of the graph.
    """
    nodes = {n.name for n in model.graph.node}
    names: set[str] = set()
    for group in groups:
        if group == "first_conv":
            names.update([n.name for n in model.graph.node if n.op_type == "Conv"][:1])
        elif group == "predictors":
            names.update(_head_nodes(model))
        elif group == "outputs":
            names.update(n for n in _head_nodes(model) if n not in _predictor_convs(model))
        elif group in nodes:
            names.add(group)
        else:
            raise ExportError(
                f"quant exclude: {group!r} is neither a group {EXCLUDE_GROUPS} nor a node name"
            )
    return sorted(names)


def _predictor_convs(model) -> set[str]:
    head = set(_head_nodes(model))
    return {n.name for n in model.graph.node if n.op_type == "Conv" and n.name in head}


def _head_nodes(model) -> list[str]:
    """Names of the predictor convolutions (a Conv feeding the Transpose of the head's flatten)
    and of every node after them."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    head = [
        n
        for n in model.graph.node
        if n.op_type == "Conv"
        and any(c.op_type == "Transpose" for c in consumers.get(n.output[0], []))
    ]
    names, stack = set(), list(head)
    while stack:
        node = stack.pop()
        if node.name in names:
            continue
        names.add(node.name)
        for out in node.output:
            stack.extend(consumers.get(out, []))
    return sorted(names)


# -------------------------------------------------------------------------------------- runtime
class OnnxRunner:
    """An ONNX Runtime CPU session over an exported detector.

    Args:
        model: path to a ``.onnx`` file or an ``onnx.ModelProto``.
        threads: intra-op threads (0: ONNX Runtime's default).
        raw_outputs: also return the internal ``box_deltas``/``class_logits`` tensors when the
            graph continues past them (verification).
    """

    def __init__(
        self, model: str | Path | Any, *, threads: int = 0, raw_outputs: bool = False
    ) -> None:
        import onnx
        import onnxruntime as ort

        proto = onnx.load(str(model)) if isinstance(model, (str, Path)) else model
        outputs = [o.name for o in proto.graph.output]
        if raw_outputs:
            extra = [n for n in RAW_NAMES if n not in outputs]
            if extra:
                proto = copy_proto(proto)
                for name in extra:
                    proto.graph.output.append(onnx.ValueInfoProto(name=name))
                outputs += extra
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        shape = self.session.get_inputs()[0].shape
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.output_names = outputs

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run on ``float32 [N, 3, H, W]``; fixed-batch graphs are run in chunks."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        step = self.fixed_batch
        if step is None or step == images.shape[0]:
            values = self.session.run(self.output_names, {self.input_name: images})
            return dict(zip(self.output_names, values))
        if images.shape[0] % step:
            raise ExportError(f"the graph takes batches of {step}, got {images.shape[0]} images")
        chunks = [
            self.session.run(self.output_names, {self.input_name: images[i : i + step]})
            for i in range(0, images.shape[0], step)
        ]
        return {n: np.concatenate([c[j] for c in chunks]) for j, n in enumerate(self.output_names)}


def copy_proto(proto):
    import onnx

    new = onnx.ModelProto()
    new.CopyFrom(proto)
    return new
