"""Run an exported TFLite detector with NumPy, OpenCV and the LiteRT interpreter only (no PyTorch).

:class:`TFLiteModel` is the ``.tflite`` file in ``ai_edge_litert.interpreter.Interpreter``:
``float32 [N, 3, H, W]`` images in, float32 outputs by name out. It is used both here and by
the export verification (:mod:`detector.export.tflite_format`), so the artifact is checked
through the same code that runs it on a device.

Outputs are found by name: the exporter names the signature outputs (``box_deltas``,
``class_logits``, ``boxes``, ``scores``), which matters because shapes cannot tell them apart
(``boxes`` and ``box_deltas`` are both ``[1, A, 4]``; with 3 classes every output is). A model
with generic names (``output_0``, ``output_1`` ...) is mapped by index to the order in the
sidecar's ``export.outputs``. Quantized (int8/uint8) outputs are dequantized with their scale and
zero point; a quantized input is quantized the same way. A channels-last input ``[1, H, W, 3]``
is accepted as well as the exporter's ``[1, 3, H, W]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import ExportedDetector, preprocess_image, read_sidecar_file, settings_from_sidecar

__all__ = ["TFLiteDetector", "TFLiteModel", "expected_output_names"]

_GENERIC = re.compile(r"^output_(\d+)$")


def expected_output_names(sidecar: dict[str, Any]) -> list[str]:
    """The output names of an exported model, in graph order, from its sidecar."""
    names = (sidecar.get("export") or {}).get("outputs")
    if names:
        return [str(n) for n in names]
    return [str(o["name"]) for o in sidecar.get("outputs", [])]


def _dequantize(value: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    scale, zero_point = details.get("quantization", (0.0, 0))
    if value.dtype in (np.int8, np.uint8, np.int16) and scale:
        return (value.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)
    return value.astype(np.float32, copy=False)


def _quantize(value: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    if dtype == np.float32:
        return value.astype(np.float32, copy=False)
    scale, zero_point = details.get("quantization", (0.0, 0))
    if dtype.kind not in "iu" or not scale:
        raise ValueError(f"unsupported TFLite input type {dtype} (quantization {scale})")
    info = np.iinfo(dtype)
    q = np.round(value / np.float32(scale) + np.float32(zero_point))
    return np.clip(q, info.min, info.max).astype(dtype)


class TFLiteModel:
    """A ``.tflite`` model in the LiteRT interpreter, called on ``float32 [N, 3, H, W]`` images.

    Args:
        path: the ``.tflite`` file.
        output_names: names expected in graph order; used to map generic output names
            (``output_0`` ...) and to check that every expected output is there (None: take the
            model's names as they are).
        threads: interpreter threads (0: the interpreter's default).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a TFLite model, has not exactly one image input, or lacks an
            expected output.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        output_names: Sequence[str] | None = None,
        threads: int = 0,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: TFLite model not found")
        try:
            self.interpreter = Interpreter(
                model_path=str(path), num_threads=threads if threads > 0 else None
            )
            signatures = self.interpreter.get_signature_list()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError variants
            raise ValueError(f"{path}: cannot load TFLite model ({exc})") from exc
        self.path = path
        if signatures:
            key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
            self._runner = self.interpreter.get_signature_runner(key)
            inputs = self._runner.get_input_details()
            outputs = self._runner.get_output_details()
        else:  # a model without signatures: plain tensors, named by the tensor names
            self._runner = None
            self.interpreter.allocate_tensors()
            inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
            outputs = {d["name"]: d for d in self.interpreter.get_output_details()}
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one image input, found {sorted(inputs)}")
        self.input_name, self._input = next(iter(inputs.items()))
        self._outputs = outputs
        self.names = self._map_outputs(list(outputs), output_names)
        self.output_names = list(self.names.values())

    def _map_outputs(self, found: list[str], expected: Sequence[str] | None) -> dict[str, str]:
        """Model output name -> our output name."""
        if not expected:
            return {n: n for n in found}
        expected = list(expected)
        if all(e in found for e in expected):
            return {e: e for e in expected}
        generic = {int(m.group(1)): n for n in found if (m := _GENERIC.match(n))}
        if len(generic) == len(found) == len(expected) and sorted(generic) == list(
            range(len(found))
        ):
            return {generic[i]: e for i, e in enumerate(expected)}
        by_suffix = {}
        for e in expected:  # tensor names such as "serving_default_box_deltas_output:0"
            hits = [n for n in found if re.search(rf"(^|[_/]){re.escape(e)}(_output)?(:\d+)?$", n)]
            if len(hits) == 1:
                by_suffix[hits[0]] = e
        if len(by_suffix) == len(expected):
            return by_suffix
        raise ValueError(
            f"{self.path}: cannot find the outputs {expected} among the model's outputs {found}"
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The model's input shape (``(1, 3, H, W)`` as exported, or ``(1, H, W, 3)``)."""
        return tuple(int(v) for v in self._input["shape"])

    def _run_one(self, image: np.ndarray) -> dict[str, np.ndarray]:
        shape = self.input_shape
        if tuple(image.shape) != shape:
            if len(shape) == 4 and tuple(image.shape) == (shape[0], shape[3], shape[1], shape[2]):
                image = image.transpose(0, 2, 3, 1)  # channels-last model
            else:
                raise ValueError(
                    f"{self.path}: input of shape {tuple(image.shape)} does not fit the model "
                    f"input {shape}"
                )
        x = _quantize(np.ascontiguousarray(image), self._input)
        if self._runner is not None:
            raw = self._runner(**{self.input_name: x})
        else:
            self.interpreter.set_tensor(self._input["index"], x)
            self.interpreter.invoke()
            raw = {n: self.interpreter.get_tensor(d["index"]) for n, d in self._outputs.items()}
        out = {}
        for theirs, ours in self.names.items():
            out[ours] = _dequantize(np.asarray(raw[theirs]), self._outputs[theirs]).copy()
        return out

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for ``float32 [N, 3, H, W]`` images (run one image at a time)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4:
            raise ValueError(f"expected images [N, 3, H, W], got shape {images.shape}")
        chunks = [self._run_one(images[i : i + 1]) for i in range(images.shape[0])]
        return {n: np.concatenate([c[n] for c in chunks]) for n in self.output_names}


class TFLiteDetector(ExportedDetector):
    """An exported TFLite detector ready to run (same interface as the ONNX
    :class:`~detector.runtime.onnx_detector.Detector`).

    Build it with :meth:`load`; call it on an RGB ``uint8`` image.

    Attributes:
        session: the :class:`TFLiteModel`.
        sidecar: the parsed sidecar.
        score_thresh, nms_thresh, topk_candidates, max_detections: post-processing settings
            (default: the sidecar's).
    """

    @classmethod
    def load(
        cls,
        tflite_path: str | Path,
        *,
        sidecar_path: str | Path | None = None,
        score_thresh: float | None = None,
        nms_thresh: float | None = None,
        topk_candidates: int | None = None,
        max_detections: int | None = None,
        threads: int = 0,
    ) -> TFLiteDetector:
        """Open ``tflite_path`` and its sidecar.

        Args:
            tflite_path: the exported ``.tflite`` model.
            sidecar_path: its sidecar (default: same name with ``.json``).
            score_thresh, nms_thresh, topk_candidates, max_detections: override the sidecar's
                post-processing settings.
            threads: interpreter threads (0: its default).

        Raises:
            FileNotFoundError: the model or its sidecar is missing.
            ValueError: the model or sidecar cannot be read, or they do not fit each other.
        """
        tflite_path = Path(tflite_path)
        if not tflite_path.is_file():
            raise FileNotFoundError(f"{tflite_path}: TFLite model not found")
        sidecar = read_sidecar_file(tflite_path, sidecar_path)
        session = TFLiteModel(
            tflite_path, output_names=expected_output_names(sidecar), threads=threads
        )
        h, w = (int(v) for v in sidecar["input"]["height_width"])
        if session.input_shape[1:] not in ((3, h, w), (h, w, 3)):
            raise ValueError(
                f"{tflite_path}: model input {session.input_shape} does not match the sidecar's "
                f"input size {h}x{w}"
            )
        settings = settings_from_sidecar(
            sidecar,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            topk_candidates=topk_candidates,
            max_detections=max_detections,
        )
        return cls(session=session, sidecar=sidecar, **settings)

    def run_raw(self, image_rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The model's named outputs (float32) for one RGB ``uint8`` image."""
        return self.session(preprocess_image(image_rgb, self.input_size))
