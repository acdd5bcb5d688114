"""Read a TFLite model's graph and constant tensors with the ``tflite`` flatbuffer package.

Only what a weight converter needs: tensors (name, shape, type, quantisation, constant data),
operators (type, inputs, outputs, the options of convolutions) and the custom options of custom
operators (FlexBuffer maps such as ``TFLite_Detection_PostProcess``'s). Parsing is done by the
generated ``tflite`` schema classes; this module only turns them into plain Python/NumPy values.

Quantised constants are dequantised with ``scale * (q - zero_point)`` (per channel along
``quantized_dimension`` when several scales are given). Weights that a ``DEQUANTIZE`` operator
produces at run time (float16 or int8 "weight-only" models) are followed back to their constant
input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TFLiteGraph", "TFLiteOp", "TFLiteTensor", "read_tflite"]

ACTIVATION_NAMES = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
PADDING_NAMES = {0: "SAME", 1: "VALID"}


def _import_tflite():
    try:
        import tflite  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "reading .tflite files needs the 'tflite' flatbuffer package: pip install tflite"
        ) from exc
    return tflite


@dataclass
class TFLiteTensor:
    """One tensor of the graph.

    Attributes:
        index: position in the subgraph's tensor list.
        name: the tensor name (TF scope path for converted TF models).
        shape: static shape.
        dtype: NumPy dtype name of the stored values (``"uint8"``, ``"float32"`` ...).
        data: the constant's raw values (``None`` for activations).
        scale, zero_point: quantisation parameters (empty when not quantised).
        quantized_dimension: axis of per-channel quantisation.
    """

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = None
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    zero_point: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    quantized_dimension: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale.size > 0 and np.issubdtype(np.dtype(self.dtype), np.integer)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        """Real values of ``values`` (stored integers) as float32."""
        if not self.quantized:
            return values.astype(np.float32)
        view = [1] * values.ndim
        if self.scale.size > 1:
            view[self.quantized_dimension] = -1
        scale = self.scale.astype(np.float64).reshape(view)
        zero = (
            self.zero_point.astype(np.float64).reshape(view)
            if self.zero_point.size
            else np.zeros(1, np.float64)
        )
        return ((values.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class TFLiteOp:
    """One operator: ``opcode`` is the builtin name (``"CONV_2D"``) or the custom code."""

    index: int
    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TFLiteGraph:
    """The first subgraph of a TFLite model."""

    tensors: list[TFLiteTensor]
    ops: list[TFLiteOp]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    version: int = 0

    def __post_init__(self) -> None:
        self._producer = {t: op for op in self.ops for t in op.outputs}
        self._by_name = {t.name: t for t in self.tensors}

    def tensor(self, key: int | str) -> TFLiteTensor:
        """A tensor by index or by exact name."""
        if isinstance(key, str):
            if key not in self._by_name:
                raise KeyError(f"no tensor named {key!r} in the TFLite graph")
            return self._by_name[key]
        return self.tensors[key]

    def producer(self, index: int) -> TFLiteOp | None:
        """The operator that writes tensor ``index`` (``None`` for inputs and constants)."""
        return self._producer.get(index)

    def consumers(self, index: int) -> list[TFLiteOp]:
        """Operators that read tensor ``index``."""
        return [op for op in self.ops if index in op.inputs]

    def constant(self, index: int) -> np.ndarray:
        """Float32 values of a constant tensor, dequantised.

        A tensor computed by a ``DEQUANTIZE`` operator from a constant (float16 or int8 weights)
        counts as a constant too.
        """
        t = self.tensors[index]
        if t.data is not None:
            return t.dequantize(t.data)
        op = self.producer(index)
        if op is not None and op.opcode == "DEQUANTIZE":
            return self.constant(op.inputs[0])
        raise ValueError(f"tensor {t.name!r} is not a constant")


def _buffer_bytes(model, buffer_index: int, raw: bytes) -> bytes | None:
    if buffer_index <= 0 or buffer_index >= model.BuffersLength():
        return None
    buf = model.Buffers(buffer_index)
    # Models over 2 GB keep buffers after the flatbuffer (offset/size instead of inline data).
    offset, size = int(buf.Offset()), int(buf.Size())
    if offset > 1:
        return raw[offset : offset + size]
    if buf.DataLength() == 0:
        return None
    return buf.DataAsNumpy().tobytes()


def _dtype_names(tflite) -> dict[int, str]:
    numpy_names = {
        "FLOAT32": "float32",
        "FLOAT16": "float16",
        "FLOAT64": "float64",
        "INT32": "int32",
        "UINT8": "uint8",
        "INT64": "int64",
        "BOOL": "bool",
        "INT16": "int16",
        "INT8": "int8",
        "UINT16": "uint16",
        "UINT32": "uint32",
        "UINT64": "uint64",
    }
    out = {}
    for name, value in vars(tflite.TensorType).items():
        if not name.startswith("_") and isinstance(value, int):
            out[value] = numpy_names.get(name, name.lower())
    return out


def _opcode_names(tflite) -> dict[int, str]:
    return {
        value: name
        for name, value in vars(tflite.BuiltinOperator).items()
        if not name.startswith("_") and isinstance(value, int)
    }


def _conv_options(tflite, op, opcode: str) -> dict[str, Any]:
    table = op.BuiltinOptions()
    if table is None:
        return {}
    opts = tflite.Conv2DOptions() if opcode == "CONV_2D" else tflite.DepthwiseConv2DOptions()
    opts.Init(table.Bytes, table.Pos)
    out = {
        "padding": PADDING_NAMES.get(opts.Padding(), str(opts.Padding())),
        "stride": (int(opts.StrideH()), int(opts.StrideW())),
        "dilation": (int(opts.DilationHFactor()), int(opts.DilationWFactor())),
        "activation": ACTIVATION_NAMES.get(
            opts.FusedActivationFunction(), str(opts.FusedActivationFunction())
        ),
    }
    if opcode == "DEPTHWISE_CONV_2D":
        out["depth_multiplier"] = int(opts.DepthMultiplier())
    return out


def _custom_options(op) -> dict[str, Any]:
    if op.CustomOptionsLength() == 0:
        return {}
    from flatbuffers import flexbuffers

    try:
        value = flexbuffers.Loads(op.CustomOptionsAsNumpy().tobytes())
    except Exception:  # not a FlexBuffer map: keep the raw bytes out of the way
        return {}
    return dict(value) if isinstance(value, dict) else {}


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse the first subgraph of a ``.tflite`` file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a TFLite flatbuffer.
    """
    tflite = _import_tflite()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: TFLite model not found")
    raw = path.read_bytes()
    if len(raw) < 8 or raw[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite model (no 'TFL3' file identifier)")
    model = tflite.Model.GetRootAsModel(raw, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError(f"{path}: the TFLite model has no subgraph")
    graph = model.Subgraphs(0)
    dtypes = _dtype_names(tflite)
    builtin = _opcode_names(tflite)

    tensors = []
    for i in range(graph.TensorsLength()):
        t = graph.Tensors(i)
        shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        dtype = dtypes.get(t.Type(), str(t.Type()))
        data = _buffer_bytes(model, t.Buffer(), raw)
        array = None
        if data is not None and dtype in np.sctypeDict:
            array = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).copy()
            if shape and array.size == int(np.prod(shape)):
                array = array.reshape(shape)
        q = t.Quantization()
        scale = np.zeros(0, np.float32)
        zero = np.zeros(0, np.int64)
        qdim = 0
        if q is not None and q.ScaleLength():
            scale = q.ScaleAsNumpy().astype(np.float32)
            zero = q.ZeroPointAsNumpy().astype(np.int64) if q.ZeroPointLength() else zero
            qdim = int(q.QuantizedDimension())
        tensors.append(
            TFLiteTensor(
                index=i,
                name=t.Name().decode("utf-8", "replace"),
                shape=shape,
                dtype=dtype,
                data=array,
                scale=scale,
                zero_point=zero,
                quantized_dimension=qdim,
            )
        )

    ops = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        # Schema >= 2.4 keeps codes above 127 in BuiltinCode; older files only fill the
        # deprecated byte field: the larger of the two is the real code.
        number = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        opcode = builtin.get(number, str(number))
        if opcode == "CUSTOM":
            opcode = code.CustomCode().decode("utf-8", "replace")
        if opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            options = _conv_options(tflite, op, opcode)
        elif op.CustomOptionsLength():
            options = _custom_options(op)
        else:
            options = {}
        ops.append(
            TFLiteOp(
                index=i,
                opcode=opcode,
                inputs=tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else (),
                outputs=tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else (),
                options=options,
            )
        )
    return TFLiteGraph(
        tensors=tensors,
        ops=ops,
        inputs=tuple(int(v) for v in graph.InputsAsNumpy()),
        outputs=tuple(int(v) for v in graph.OutputsAsNumpy()),
        version=int(model.Version()),
    )
