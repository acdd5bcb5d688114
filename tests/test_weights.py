"""Pretrained backbone weights: Keras MobileNet .h5, timm MobileNetV1, our own state dicts.

The Keras tests build ``keras.applications.MobileNet(weights=None, alpha=a)`` with TensorFlow
(an optional test dependency: skipped when not installed), randomise every weight (BatchNorm
statistics included, so that a mix-up of gamma/beta/mean/variance shows), save it in each Keras
file layout and compare logits with our ``MobileNetV1(alpha, num_classes=1000, padding="tf")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401  (load torchvision's C++ ops before TensorFlow: the other order segfaults)

from detector.models import MobileNetV1
from detector.weights import load_backbone_weights

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INPUT = 128  # any size whose stride-2 inputs are even (Keras pads (0, 1) = TF "SAME" there)


def _randomise_keras(model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = []
        for w, v in zip(layer.weights, weights):
            name = getattr(w, "path", w.name).rsplit("/", 1)[-1].split(":")[0]
            if name == "moving_variance":
                new.append(rng.uniform(0.5, 2.0, v.shape).astype(v.dtype))
            elif name == "gamma":
                new.append(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
            elif name in ("beta", "moving_mean", "bias"):
                new.append(rng.normal(0, 0.2, v.shape).astype(v.dtype))
            else:  # kernels: He-like scale keeps activations in range through 27 layers
                fan_in = 9 if layer.name.startswith("conv_dw") else int(np.prod(v.shape[:-1]))
                new.append(rng.normal(0, np.sqrt(2.0 / fan_in), v.shape).astype(v.dtype))
        layer.set_weights(new)


@pytest.fixture(scope="module")
def keras():
    pytest.importorskip("h5py")
    pytest.importorskip("tensorflow")
    import keras

    return keras


@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.25])
def test_keras_mobilenet_h5_gives_the_same_logits(keras, alpha: float, tmp_path: Path) -> None:
    rng = np.random.default_rng(int(alpha * 100))
    kmodel = keras.applications.MobileNet(
        input_shape=(INPUT, INPUT, 3), alpha=alpha, weights=None, classifier_activation=None
    )
    _randomise_keras(kmodel, rng)
    x = rng.uniform(-1, 1, (2, INPUT, INPUT, 3)).astype(np.float32)
    expected = np.asarray(kmodel(x, training=False))

    files = {
        "legacy full model": tmp_path / "model.h5",
        "Keras 3 weights": tmp_path / "model.weights.h5",
    }
    kmodel.save(files["legacy full model"])
    kmodel.save_weights(files["Keras 3 weights"])
    for kind, path in files.items():
        ours = MobileNetV1(alpha, num_classes=1000, padding="tf").eval()
        message = load_backbone_weights(ours, path)
        assert "Keras MobileNet" in message and "+ classifier" in message, message
        with torch.no_grad():
            logits = ours(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4, err_msg=kind)


def test_keras_imagenet_layout_and_no_top(tmp_path: Path) -> None:
    """The ImageNet downloads (Keras 2 ``save_weights`` layout: root ``layer_names``, weight
    names ``conv_dw_1/depthwise_kernel:0``), here written with h5py from a torch model; the
    ``_no_top`` file has no ``conv_preds``."""
    h5py = pytest.importorskip("h5py")
    src = MobileNetV1(0.5, num_classes=1000, padding="tf").eval()
    for m in src.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    src.classifier[3].bias.data.normal_(0, 0.1)

    def write(path: Path, top: bool) -> None:
        with h5py.File(path, "w") as f:
            names = []

            def layer(name: str, weights: list[tuple[str, torch.Tensor]]) -> None:
                names.append(name)
                g = f.create_group(name)
                g.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w, _ in weights]
                for w, t in weights:
                    g.create_dataset(f"{name}/{w}:0", data=t.detach().numpy())

            def block(name: str, mod, depthwise: bool = False) -> None:
                w = mod.conv.weight
                kernel = w.permute(2, 3, 0, 1) if depthwise else w.permute(2, 3, 1, 0)
                layer(name, [("depthwise_kernel" if depthwise else "kernel", kernel)])
                bn = mod.bn
                layer(
                    f"{name}_bn",
                    [
                        ("gamma", bn.weight),
                        ("beta", bn.bias),
                        ("moving_mean", bn.running_mean),
                        ("moving_variance", bn.running_var),
                    ],
                )
                names.append(f"{name}_relu")
                f.create_group(f"{name}_relu").attrs["weight_names"] = []

            block("conv1", src.features[0])
            for i in range(1, 14):
                block(f"conv_dw_{i}", src.features[i].depthwise, depthwise=True)
                block(f"conv_pw_{i}", src.features[i].pointwise)
            if top:
                lin = src.classifier[3]
                layer("conv_preds", [("kernel", lin.weight.T[None, None]), ("bias", lin.bias)])
            f.attrs["layer_names"] = [n.encode() for n in names]

    x = torch.randn(1, 3, 96, 96)
    for top in (True, False):
        path = tmp_path / f"mobilenet_5_0_224_tf{'' if top else '_no_top'}.h5"
        write(path, top)
        ours = MobileNetV1(0.5, num_classes=1000, padding="tf").eval()
        message = load_backbone_weights(ours, path)
        with torch.no_grad():
            torch.testing.assert_close(ours.features(x), src.features(x))
            if top:
                assert "+ classifier" in message
                torch.testing.assert_close(ours(x), src(x))
            else:
                assert "classifier left as initialised" in message
        # A detector backbone (no classifier) takes both files.
        backbone = MobileNetV1(0.5, padding="torch")
        assert "padding='tf'" in load_backbone_weights(backbone, path)
    with pytest.raises(ValueError, match=r"alpha=0.5 for a MobileNetV1\(alpha=1.0\)"):
        load_backbone_weights(MobileNetV1(1.0), path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_mobilenetv1_gives_the_same_logits(suffix: str, tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    tmodel = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in tmodel.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                # Variances around eps-scale too: the eps 1e-5 -> 1e-3 adjustment must hold.
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 2 + 1e-4)
                m.running_var[:2] = 1e-4
                m.running_mean.normal_(0, 0.2, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
    path = tmp_path / f"mobilenetv1_100{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(tmodel.state_dict(), str(path))
    else:
        torch.save(tmodel.state_dict(), path)
    ours = MobileNetV1(1.0, num_classes=1000, padding="torch").eval()
    message = load_backbone_weights(ours, path)
    assert "timm MobileNetV1" in message and "+ classifier" in message
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tmodel(x), atol=1e-4, rtol=1e-4)


def test_own_state_dict_and_errors(tmp_path: Path) -> None:
    src = MobileNetV1(0.25, num_classes=10)
    plain = tmp_path / "ours.pt"
    torch.save(src.state_dict(), plain)
    dst = MobileNetV1(0.25, num_classes=10)
    assert "+ classifier" in load_backbone_weights(dst, plain)
    torch.testing.assert_close(dst.state_dict(), src.state_dict())
    # A detector backbone ignores the classifier.
    assert "MobileNetV1 state dict" in load_backbone_weights(MobileNetV1(0.25), plain)

    with pytest.raises(FileNotFoundError):
        load_backbone_weights(dst, tmp_path / "missing.h5")
    junk = tmp_path / "junk.pth"
    torch.save({"foo": torch.zeros(1)}, junk)
    with pytest.raises(ValueError, match="unknown weight naming"):
        load_backbone_weights(dst, junk)
    with pytest.raises(ValueError, match="alpha"):
        load_backbone_weights(MobileNetV1(0.5), plain)
    not_h5 = tmp_path / "x.h5"
    not_h5.write_bytes(b"not hdf5")
    pytest.importorskip("h5py")
    with pytest.raises(ValueError, match="HDF5"):
        load_backbone_weights(dst, not_h5)
