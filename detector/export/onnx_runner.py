"""The ONNX Runtime runner the export verification (and the latency benchmark) calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError
from .wrapper import RAW_NAMES

__all__ = ["OnnxRunner", "copy_proto"]


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
