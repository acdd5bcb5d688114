"""TFLite export through litert-torch (``.tflite``) and the LiteRT-interpreter runner.

How a model is built (see :func:`export_tflite`):

1. the :class:`~detector.export.wrapper.ExportWrapper` network (BatchNorm folded) is wrapped so
   that it takes one keyword input ``images`` and returns a dict of named tensors; litert-torch
   keeps those names as the signature's input and output names, so a runtime finds
   ``box_deltas``/``class_logits`` (``raw``) or ``boxes``/``scores`` plus the raw pair
   (``decoded``) by name, not by shape (which cannot tell ``boxes`` from ``box_deltas``);
2. ``litert_torch.convert(module, (), {"images": sample})`` captures it with ``torch.export``,
   lowers it to StableHLO/TFLite and ``.export(path)`` writes the flatbuffer. The input stays
   NCHW ``float32 [1, 3, H, W]`` like the PyTorch model (the converter moves the layout
   transposes inside the graph); the sidecar records the layout;
3. for ``int8``: the network alone is captured with ``torch.export``, annotated with litert-torch's
   ``PT2EQuantizer`` (symmetric int8, per-channel weights, histogram-calibrated activations),
   calibrated on the images, converted with ``torchao``'s ``convert_pt2e`` and then converted as in
   2 with ``quant_config``. Decoding and scores stay float32 (same scope as the ONNX int8
   export). Quantized outputs are int8 tensors with a scale and zero point that the runner and
   :mod:`detector.runtime` dequantize. The fp32 model is written as well (``<name>_fp32.tflite``).

Not supported: in-graph NMS (data-dependent output size) and a free batch dimension;
:data:`detector.export.FORMATS` rejects those requests before any work.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..runtime.tflite_detector import TFLiteModel
from .errors import ExportError
from .registry import ExportFormat, ExportJob, register
from .wrapper import ExportWrapper, program_output_names

if TYPE_CHECKING:
    from .config import ExportConfig

__all__ = ["TFLiteRunner", "export_tflite", "tflite_output_names"]

INPUT_NAME = "images"


def tflite_output_names(stage: str) -> list[str]:
    """Names of the signature outputs of a model of ``stage``, in graph order."""
    return program_output_names(stage, "tflite")


class _Named(nn.Module):
    """``net`` (+ optional decoding) returning a dict: the names become the TFLite outputs."""

    def __init__(self, net: nn.Module, post: nn.Module | None) -> None:
        super().__init__()
        self.net = net
        self.post = post

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        box_deltas, class_logits = self.net(images)
        if self.post is None:
            return {"box_deltas": box_deltas, "class_logits": class_logits}
        boxes, scores = self.post(box_deltas, class_logits)
        return {
            "boxes": boxes,
            "scores": scores,
            "box_deltas": box_deltas,
            "class_logits": class_logits,
        }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide litert-torch's progress lines and Python warnings during a conversion."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    old = os.environ.get(key)
    os.environ[key] = "0"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _convert(module: nn.Module, sample: Tensor, path: Path, quant_config: Any = None) -> None:
    import litert_torch

    edge = litert_torch.convert(module, (), {INPUT_NAME: sample}, quant_config=quant_config)
    edge.export(str(path))


def _ssd_quantizer(per_channel: bool) -> Any:
    """litert-torch's ``PT2EQuantizer`` (symmetric int8) that also observes the head's concats.

    The stock annotator misses the ``cat`` of the head (its inputs come through ``reshape``), so
    the float concat sits between dequantize nodes; the TFLite converter then quantizes the
    concat anyway with the parameters of one of its inputs ("Missing quantization parameter on
    the output"), clipping the other levels (class logits off by several units). Annotating every
    unannotated ``cat`` with one observer shared by its inputs and output (the TFLite int8 rule
    for CONCATENATION) gives it a range that covers all levels.
    """
    from litert_torch.quantize import pt2e_quantizer
    from torch.fx import Node
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    class _Quantizer(pt2e_quantizer.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            act = self.global_config.input_activation
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target != torch.ops.aten.cat.default:
                    continue
                done = node.meta.get("quantization_annotation")
                inputs = [n for n in node.args[0] if isinstance(n, Node)]
                if (done is not None and done._annotated) or not inputs:
                    continue
                shared = SharedQuantizationSpec((inputs[0], node))
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={n: act if i == 0 else shared for i, n in enumerate(inputs)},
                    output_qspec=shared,
                    _annotated=True,
                )
            return model

    return _Quantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=per_channel)
    )


def _quantize_network(
    net: nn.Module, sample: Tensor, calibration: Iterable[np.ndarray], per_channel: bool
) -> tuple[nn.Module, Any, int]:
    """PT2E int8 quantization of the network; returns the converted module, the quant config and
    the number of calibration images seen."""
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = _ssd_quantizer(per_channel)
    captured = torch.export.export(net, (sample,)).module()
    prepared = prepare_pt2e(captured, quantizer)
    seen = 0
    for batch in calibration:
        batch = np.asarray(batch, dtype=np.float32)
        for i in range(batch.shape[0]):  # the graph was captured at batch 1
            prepared(torch.from_numpy(batch[i : i + 1].copy()))
            seen += 1
    if seen == 0:
        raise ExportError("int8 calibration needs at least one image")
    quantized = convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(quantized)
    return quantized, QuantConfig(pt2e_quantizer=quantizer), seen


def export_tflite(
    model: nn.Module,
    path: str | Path,
    *,
    stage: str = "raw",
    post: dict[str, Any] | None = None,
    calibration: Iterable[np.ndarray] | None = None,
    fp32_path: str | Path | None = None,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Export an SSD to a ``.tflite`` file with litert-torch.

    Args:
        model: the :class:`~detector.models.SSD` (eval mode; not modified).
        path: the ``.tflite`` file to write.
        stage: ``"raw"`` or ``"decoded"``.
        post: post-processing settings for ``decoded`` (``score_thresh`` ... ``clip_boxes``;
            only ``clip_boxes`` affects the decoded graph).
        calibration: when given, quantize the network to int8 with these
            ``float32 [N, 3, H, W]`` batches (PT2E static quantization).
        fp32_path: with ``calibration``, also write the fp32 model here.
        per_channel: int8 weights per output channel (else per tensor).

    Returns:
        Facts for the sidecar: ``exporter``, ``input_layout``, ``outputs``, ``int8``,
        ``litert_torch_version`` and, for int8, ``quantization`` and ``fp32_file``.

    Raises:
        ExportError: the stage is not supported or the conversion failed.
    """
    names = tflite_output_names(stage)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(model, decode=stage == "decoded", **(post or {})).eval()
    h, w = model.image_size
    sample = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    facts: dict[str, Any] = {
        "exporter": "litert_torch.convert (torch.export -> StableHLO -> TFLite)",
        "signature": "serving_default",
        "input_layout": "NCHW",
        "outputs": names,
        "int8": calibration is not None,
        "litert_torch_version": _version("litert-torch"),
    }
    try:
        with _quiet():
            if calibration is None:
                _convert(_Named(wrapper.model, wrapper.post).eval(), sample, path)
                return facts
            if fp32_path is not None:
                _convert(_Named(wrapper.model, wrapper.post).eval(), sample, Path(fp32_path))
                facts["fp32_file"] = Path(fp32_path).name
            quantized, quant_config, seen = _quantize_network(
                wrapper.model, sample, calibration, per_channel
            )
            # An exported GraphModule refuses .eval(); the wrapper itself has nothing to switch.
            module = _Named(quantized, wrapper.post)
            module.training = False
            _convert(module, sample, path, quant_config=quant_config)
    except ExportError:
        raise
    except Exception as exc:  # torch.export / litert-torch raise many kinds of errors
        raise ExportError(f"TFLite export failed: {type(exc).__name__}: {exc}") from exc
    facts["quantization"] = {
        "method": "PT2E static (litert_torch PT2EQuantizer, symmetric int8)",
        "per_channel": per_channel,
        "activation_observer": "histogram",
        "scope": "network only (decode and scores stay float32)",
        "num_images_seen": seen,
        "quantized_outputs": "int8 outputs carry a scale and zero point: "
        "value = (q - zero_point) * scale",
    }
    return facts


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


class TFLiteRunner(TFLiteModel):
    """The exported model in the LiteRT interpreter, as verification calls it.

    Args:
        path: the ``.tflite`` file.
        stage: the model's stage (``"raw"`` or ``"decoded"``), which names its outputs.
        threads: interpreter threads (0: its default).

    Calling it with ``float32 [N, 3, H, W]`` returns float32 outputs by name (int8 outputs
    dequantized); the model has a fixed batch of 1, so images are run one at a time.
    """

    def __init__(self, path: str | Path, *, stage: str = "raw", threads: int = 0) -> None:
        try:
            super().__init__(path, output_names=tflite_output_names(stage), threads=threads)
        except ValueError as exc:
            raise ExportError(str(exc)) from exc


# ------------------------------------------------------------------------------ registry entry
def _export(job: ExportJob) -> dict[str, Any]:
    return export_tflite(
        job.model,
        job.path,
        **job.graph_options(),
        calibration=job.calibration,
        fp32_path=job.fp32_path,
        per_channel=job.config.format.per_channel,
    )


def _runner(path: Path, config: ExportConfig) -> TFLiteRunner:
    return TFLiteRunner(path, stage=config.stage, threads=config.threads)


register(
    ExportFormat(
        name="tflite",
        suffix=".tflite",
        runtime="LiteRT interpreter",
        stages=("raw", "decoded"),
        int8=True,
        requires=("litert_torch", "ai_edge_litert"),
        install="pip install 'detector[export]'  (litert-torch, ai-edge-litert)",
        notes="litert-torch conversion (NCHW input, named outputs); int8 = PT2E static "
        "quantization of the network; verified in the ai-edge-litert interpreter",
        export=_export,
        runner=_runner,
    )
)
