"""Loading pretrained weights into the MobileNetV1 backbone (``backbone.pretrained=<file>``).

:func:`load_backbone_weights` picks the reader from the file:

* ``.h5`` / ``.hdf5``: Keras ``MobileNet`` weights (``keras.applications.MobileNet``, any
  ``alpha`` and resolution), as the ImageNet files Keras downloads
  (``mobilenet_<alpha>_<res>_tf[_no_top].h5``), a full model saved with ``model.save("x.h5")`` or
  a Keras 3 ``model.save_weights("x.weights.h5")``. Read with ``h5py``; layers are matched by
  their Keras names (``conv1``, ``conv1_bn``, ``conv_dw_<i>``, ``conv_dw_<i>_bn``,
  ``conv_pw_<i>``, ``conv_pw_<i>_bn``, ``conv_preds``).
* ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin``: a state dict in timm's MobileNetV1 naming
  (``mobilenetv1_100``: ``conv_stem``, ``bn1``, ``blocks.<s>.<b>.conv_dw/bn1/conv_pw/bn2``,
  ``classifier``), or ours (a :class:`~detector.models.MobileNetV1` state dict, or a detector
  checkpoint whose backbone is taken).

The 1000-class classifier (Keras ``conv_preds``, timm ``classifier``) is loaded too when the
backbone has a classifier of that size (``MobileNetV1(alpha, num_classes=1000)``); a detector
backbone has none and ignores it.

Exactness notes: Keras MobileNet pads stride-2 layers TF-style (``ZeroPadding2D((0, 1), (0, 1))``
then ``valid``, equal to TF ``"SAME"`` on even sizes), so it matches ``padding="tf"``; timm's
pads symmetrically (``padding="torch"``). Loading into the other padding works but shifts the
sampling grid by a pixel (fine for fine-tuning, not for bit-exact outputs); the log line says so.
timm uses BatchNorm ``eps = 1e-5`` where ours is ``1e-3``: the running variance (or, where that
would turn negative, gamma) is adjusted so that eval-mode outputs are unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .models import MobileNetV1
from .models.layers import Conv2dSame

__all__ = ["load_backbone_weights", "read_keras_mobilenet", "timm_to_ours"]

KERAS_SUFFIXES = (".h5", ".hdf5")
TORCH_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
KERAS_BN_EPS = 1e-3
TIMM_BN_EPS = 1e-5
_BN_ORDER = ("gamma", "beta", "moving_mean", "moving_variance")


def load_backbone_weights(backbone: MobileNetV1, path: str | Path) -> str:
    """Copy pretrained weights from ``path`` into ``backbone``; returns a log line.

    Every backbone tensor (``features.*``) must be found with the right shape; the classifier is
    loaded when both sides have one of the same size.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable file, unknown naming, or weights of another width multiplier.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained backbone weights not found")
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        state, source_eps, kind = read_keras_mobilenet(path), KERAS_BN_EPS, "Keras MobileNet"
        trained_padding = "tf"
    else:
        state = _read_torch_state(path)
        if _is_timm(state):
            state, source_eps, kind = timm_to_ours(state), TIMM_BN_EPS, "timm MobileNetV1"
            trained_padding = "torch"
        else:
            state, source_eps, kind = _ours(state, path), None, "MobileNetV1 state dict"
            trained_padding = None
    if source_eps is not None:
        state = _adjust_bn_eps(state, source_eps, _backbone_eps(backbone))
    message = _apply(backbone, state, path, kind)
    padding = "tf" if isinstance(backbone.features[0].conv, Conv2dSame) else "torch"
    if trained_padding is not None and trained_padding != padding:
        message += (
            f"; note: {kind} weights were trained with padding={trained_padding!r}, this backbone "
            f"uses padding={padding!r} (outputs shift slightly; fine for fine-tuning)"
        )
    return message


# ---------------------------------------------------------------------------------- applying
def _apply(backbone: MobileNetV1, state: Mapping[str, Tensor], path: Path, kind: str) -> str:
    own = backbone.state_dict()
    feature_keys = [k for k in own if k.startswith("features.")]
    missing = [k for k in feature_keys if k not in state]
    if len(missing) == len(feature_keys):
        raise ValueError(f"{path}: no MobileNetV1 backbone tensor found ({kind})")
    if missing:
        raise ValueError(f"{path}: {len(missing)} backbone tensors missing, e.g. {missing[:3]}")
    wrong = [k for k in feature_keys if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{path}: {len(wrong)} backbone tensors of another shape, e.g. {k} "
            f"{tuple(state[k].shape)} vs {tuple(own[k].shape)}: weights of "
            f"alpha={_alpha_of(state)} for a MobileNetV1(alpha={backbone.alpha})?"
        )
    load = {k: state[k].to(own[k].dtype) for k in feature_keys}
    classifier_keys = [k for k in own if k.startswith("classifier.")]
    with_classifier = bool(classifier_keys) and all(
        k in state and tuple(state[k].shape) == tuple(own[k].shape) for k in classifier_keys
    )
    if with_classifier:
        load.update({k: state[k].to(own[k].dtype) for k in classifier_keys})
    backbone.load_state_dict(load, strict=False)
    head = ""
    if with_classifier:
        head = " + classifier"
    elif classifier_keys:
        head = " (classifier left as initialised: none of that size in the file)"
    return f"backbone weights loaded from {path} ({kind}: {len(feature_keys)} tensors{head})"


def _alpha_of(state: Mapping[str, Tensor]) -> str:
    key = "features.13.pointwise.conv.weight"
    if key in state:
        return f"{state[key].shape[0] / 1024:g}"
    return "?"


def _backbone_eps(backbone: MobileNetV1) -> float:
    return float(backbone.features[0].bn.eps)


def _adjust_bn_eps(state: dict[str, Tensor], source: float, target: float) -> dict[str, Tensor]:
    """Keep ``(x - mean) / sqrt(var + source) * gamma`` when our BN adds ``target`` instead."""
    if source == target:
        return state
    out = dict(state)
    for key in [k for k in state if k.endswith(".running_var")]:
        prefix = key[: -len("running_var")]
        var = state[key].double()
        shifted = var + source - target
        ok = shifted > 1e-6
        gamma = state[prefix + "weight"].double()
        scale = torch.sqrt((var + target) / (var + source))
        out[key] = torch.where(ok, shifted, var).float()
        out[prefix + "weight"] = torch.where(ok, gamma, gamma * scale).float()
    return out


# ---------------------------------------------------------------------------------- Keras
def _keras_layers(path: Path) -> dict[str, list[tuple[str | None, np.ndarray]]]:
    """``{layer name: [(weight name or None, array), ...]}`` in stored order."""
    try:
        import h5py
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("reading Keras .h5 weights needs h5py: pip install h5py") from exc

    def text(value) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    layers: dict[str, list[tuple[str | None, np.ndarray]]] = {}
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not an HDF5 file ({exc})") from exc
    with f:
        root = f.get("model_weights", f)
        if "layer_names" in root.attrs:  # Keras 2 / legacy h5 (ImageNet downloads, model.save)
            for name in (text(n) for n in root.attrs["layer_names"]):
                group = root[name]
                weights = []
                for wname in (text(n) for n in group.attrs.get("weight_names", [])):
                    short = wname.rsplit("/", 1)[-1].split(":", 1)[0]
                    weights.append((short, np.asarray(group[wname])))
                layers[name] = weights
        elif "layers" in f:  # Keras 3 "*.weights.h5": layers/<path>/vars/<i>, name in attrs

            def visit(_: str, obj) -> None:
                if (
                    isinstance(obj, h5py.Group)
                    and obj.name.endswith("/vars")
                    and "name" in obj.attrs
                ):
                    keys = sorted(obj.keys(), key=int)
                    layers[text(obj.attrs["name"])] = [(None, np.asarray(obj[k])) for k in keys]

            f["layers"].visititems(visit)
        else:
            raise ValueError(f"{path}: not a Keras weights file (no layer_names, no layers/)")
    return layers


def read_keras_mobilenet(path: str | Path) -> dict[str, Tensor]:
    """Keras ``MobileNet`` weights as a :class:`MobileNetV1` state dict (classifier included
    when the file has ``conv_preds``)."""
    path = Path(path)
    layers = _keras_layers(path)
    if "conv1" not in layers or "conv_pw_13" not in layers:
        raise ValueError(f"{path}: no Keras MobileNet layers (conv1 ... conv_pw_13) in the file")
    state: dict[str, Tensor] = {}

    def kernel(layer: str) -> np.ndarray:
        weights = layers.get(layer)
        if not weights:
            raise ValueError(f"{path}: Keras layer {layer!r} missing")
        named = {n: a for n, a in weights if n}
        return named.get("kernel", named.get("depthwise_kernel", weights[0][1]))

    def conv(layer: str, prefix: str, depthwise: bool = False) -> None:
        k = kernel(layer)  # HWIO, depthwise HW C 1
        perm = (2, 3, 0, 1) if depthwise else (3, 2, 0, 1)
        state[f"{prefix}.conv.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(perm)))

    def bn(layer: str, prefix: str) -> None:
        weights = layers.get(layer)
        if not weights or len(weights) != 4:
            raise ValueError(f"{path}: Keras BatchNormalization {layer!r} missing or not affine")
        named = {n: a for n, a in weights if n}
        values = (
            [named[n] for n in _BN_ORDER]
            if set(_BN_ORDER) <= set(named)
            else [a for _, a in weights]
        )
        gamma, beta, mean, var = (torch.from_numpy(np.asarray(v, np.float32)) for v in values)
        state[f"{prefix}.bn.weight"] = gamma
        state[f"{prefix}.bn.bias"] = beta
        state[f"{prefix}.bn.running_mean"] = mean
        state[f"{prefix}.bn.running_var"] = var
        state[f"{prefix}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    conv("conv1", "features.0")
    bn("conv1_bn", "features.0")
    i = 1
    while f"conv_dw_{i}" in layers:
        conv(f"conv_dw_{i}", f"features.{i}.depthwise", depthwise=True)
        bn(f"conv_dw_{i}_bn", f"features.{i}.depthwise")
        conv(f"conv_pw_{i}", f"features.{i}.pointwise")
        bn(f"conv_pw_{i}_bn", f"features.{i}.pointwise")
        i += 1
    if layers.get("conv_preds"):
        named = {n: a for n, a in layers["conv_preds"] if n}
        k = named.get("kernel", layers["conv_preds"][0][1])  # [1, 1, C, N]
        b = named.get("bias", layers["conv_preds"][-1][1])
        state["classifier.3.weight"] = torch.from_numpy(np.ascontiguousarray(k[0, 0].T))
        state["classifier.3.bias"] = torch.from_numpy(np.asarray(b))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


# ---------------------------------------------------------------------------------- PyTorch
def _read_torch_state(path: Path) -> dict[str, Tensor]:
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "reading .safetensors needs safetensors: pip install safetensors"
            ) from exc
        try:
            return dict(load_file(str(path)))
        except Exception as exc:
            raise ValueError(f"{path}: cannot read safetensors ({exc})") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read weights ({exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _is_timm(state: Mapping) -> bool:
    keys = _unwrap(state).keys()
    return any(k.endswith("conv_stem.weight") for k in keys)


def _unwrap(state: Mapping) -> Mapping:
    """The tensors of a wrapped state dict (``{"state_dict": ...}``, ``{"model": ...}``)."""
    for key in ("state_dict", "model"):
        inner = state.get(key)
        if (
            isinstance(inner, Mapping)
            and inner
            and all(isinstance(v, Tensor) for v in inner.values())
        ):
            return inner
    return state


def timm_to_ours(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm ``mobilenetv1_*`` names -> ours (BatchNorm eps left as timm's, see module doc)."""
    state = _unwrap(state)
    prefix = next(k for k in state if k.endswith("conv_stem.weight"))[: -len("conv_stem.weight")]
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    out: dict[str, Tensor] = {"features.0.conv.weight": state["conv_stem.weight"]}

    def bn(src: str, dst: str) -> None:
        for a, b in (
            ("weight", "weight"),
            ("bias", "bias"),
            ("running_mean", "running_mean"),
            ("running_var", "running_var"),
            ("num_batches_tracked", "num_batches_tracked"),
        ):
            if f"{src}.{a}" in state:
                out[f"{dst}.{b}"] = state[f"{src}.{a}"]

    bn("bn1", "features.0.bn")
    blocks = sorted(
        {
            (int(m.group(1)), int(m.group(2)))
            for k in state
            if (m := re.match(r"blocks\.(\d+)\.(\d+)\.", k))
        }
    )
    for i, (s, b) in enumerate(blocks, start=1):
        src = f"blocks.{s}.{b}"
        if f"{src}.conv_dw.weight" not in state:
            raise ValueError(f"timm block {src} is not a depthwise-separable block")
        out[f"features.{i}.depthwise.conv.weight"] = state[f"{src}.conv_dw.weight"]
        bn(f"{src}.bn1", f"features.{i}.depthwise.bn")
        out[f"features.{i}.pointwise.conv.weight"] = state[f"{src}.conv_pw.weight"]
        bn(f"{src}.bn2", f"features.{i}.pointwise.bn")
    # A head convolution (mobilenetv1_100h) sits between the blocks and the classifier: our
    # classifier cannot take that classifier then.
    if "classifier.weight" in state and "conv_head.weight" not in state:
        out["classifier.3.weight"] = state["classifier.weight"]
        out["classifier.3.bias"] = state["classifier.bias"]
    return out


def _ours(state: Mapping[str, Tensor], path: Path) -> dict[str, Tensor]:
    if "model" in state and "model_config" in state:  # a detector checkpoint
        prefix = "features.backbone."
        return {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    state = _unwrap(state)
    for prefix in ("", "module.", "backbone.", "features.backbone.", "model.features.backbone."):
        if f"{prefix}features.0.conv.weight" in state:
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    raise ValueError(
        f"{path}: unknown weight naming (neither timm MobileNetV1, nor ours, nor a detector "
        "checkpoint)"
    )
