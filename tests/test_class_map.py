"""Class maps between a model and a dataset (detector.classes): by COCO category id where both
sides have ids, else by name; the eval-time restriction to the dataset's classes
(detector.engine.class_subset) against a plain full post-processing followed by a filter."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from coco_assets import COCO_CATEGORIES

from detector.classes import ClassSpec, class_spec_of_checkpoint, dataset_class_spec, match_classes
from detector.engine.checkpoint import save_checkpoint
from detector.engine.class_subset import DatasetClassModel, restrict_to_dataset
from detector.models import ssd_mobilenet_v1
from detector.postprocess import PostprocessConfig, postprocess_detections

COCO_IDS = {name: cid for cid, name in COCO_CATEGORIES}


def tf_label_map() -> ClassSpec:
    """A TF OD API COCO label map as the converter stores it: 90 slots, '???' at unused ids."""
    names = ["???"] * 90
    for cid, name in COCO_CATEGORIES:
        names[cid - 1] = name
    return ClassSpec(tuple(names), tuple(range(1, 91)))


def coco80(names: list[str] | None = None) -> ClassSpec:
    cats = [(cid, n) for cid, n in COCO_CATEGORIES if names is None or n in names]
    return ClassSpec(tuple(n for _, n in cats), tuple(c for c, _ in cats))


def test_90_id_model_on_80_category_coco_set_matches_by_id() -> None:
    cmap = match_classes(tf_label_map(), coco80())
    assert cmap.by == "id"
    assert len(cmap.model_to_data) == 80 and not cmap.dropped and not cmap.missing
    for model_label, data_label in cmap.model_to_data.items():
        # TF slot k (1-based) is COCO id k; the dataset's label is its rank in id order.
        assert COCO_CATEGORIES[data_label - 1][0] == model_label
    assert not cmap.identity
    # Placeholders are never matched, not even with a dataset class called '???'.
    assert 12 not in cmap.model_to_data and 83 not in cmap.model_to_data


def test_ids_win_over_renamed_classes() -> None:
    data = ClassSpec(("person", "car", "settee", "telly"), (1, 3, 63, 72))
    cmap = match_classes(tf_label_map(), data)
    assert cmap.by == "id"
    assert cmap.model_to_data == {1: 1, 3: 2, 63: 3, 72: 4}
    assert cmap.renamed == [("couch", "settee"), ("tv", "telly")]


def test_voc_names_match_coco_names() -> None:
    voc = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
           "train", "tvmonitor")  # fmt: skip
    cmap = match_classes(tf_label_map(), ClassSpec(voc))
    assert cmap.by == "name" and not cmap.missing
    got = {voc[d - 1]: cmap.model.names[m - 1] for m, d in cmap.model_to_data.items()}
    assert got["aeroplane"] == "airplane" and got["diningtable"] == "dining table"
    assert got["tvmonitor"] == "tv" and got["sofa"] == "couch" and got["motorbike"] == "motorcycle"


def test_subset_keeps_only_shared_classes() -> None:
    cmap = match_classes(tf_label_map(), coco80(["person", "car", "dog"]))
    assert cmap.model_to_data == {1: 1, 3: 2, 18: 3}
    assert len(cmap.dropped) == 77  # the other used COCO ids; '???' slots are not classes
    assert "person (id 1), car (id 3), dog (id 18)" in cmap.summary()


def test_custom_ids_that_mean_other_things_fall_back_to_names() -> None:
    # A custom COCO file numbered 1..3: id 1 is 'car' there, 'person' in the model.
    data = ClassSpec(("car", "dog", "raccoon"), (1, 2, 3))
    cmap = match_classes(tf_label_map(), data)
    assert cmap.by == "name"
    assert cmap.model_to_data == {3: 1, 18: 2}
    assert cmap.missing == [3]


def test_names_only_and_old_checkpoints_without_ids() -> None:
    old = class_spec_of_checkpoint({"classes": ["???", "Person", "traffic_light"]})
    assert old is not None and old.ids is None
    cmap = match_classes(old, ClassSpec(("traffic light", "person")))
    assert cmap.by == "name" and cmap.model_to_data == {2: 2, 3: 1}
    assert class_spec_of_checkpoint({"classes": []}) is None


def test_no_shared_class_is_one_clear_error_naming_both_lists() -> None:
    with pytest.raises(ValueError) as err:
        match_classes(tf_label_map(), ClassSpec(("raccoon", "face"), (1, 2)))
    text = str(err.value)
    assert "no class in common" in text and "raccoon (id 1)" in text and "person (id 1)" in text
    assert "\n" not in text and "'???'" not in text


def test_class_spec_checks_its_ids() -> None:
    with pytest.raises(ValueError, match="class_ids has 1 entries for 2 classes"):
        ClassSpec(("a", "b"), (1,))
    with pytest.raises(ValueError, match=r"repeats category ids \[4\]"):
        ClassSpec(("a", "b"), (4, 4))


def test_dataset_spec_reads_coco_category_ids() -> None:
    fake = SimpleNamespace(classes=["person", "car"], label_to_category_id={1: 1, 2: 3})
    assert dataset_class_spec(fake) == ClassSpec(("person", "car"), (1, 3))


# ------------------------------------------------------------------------- eval-time restriction
@pytest.mark.parametrize("score_fn", ["softmax", "sigmoid"])
def test_restricted_model_equals_full_postprocessing_then_filter(score_fn: str) -> None:
    """The dataset-indexed logits give exactly the detections that post-processing all classes
    (with no max_detections cut) and keeping the shared ones gives, relabelled."""
    torch.manual_seed(1)
    model = ssd_mobilenet_v1(4, alpha=0.25, image_size=(96, 96), score_fn=score_fn).eval()
    with torch.no_grad():
        for p in model.head.class_predictors:
            p.weight.mul_(3.0)
    model_spec = ClassSpec(("a", "b", "c", "d"))
    data_spec = ClassSpec(("d", "x", "b"))  # d -> 1, b -> 3, x is not in the model
    post = PostprocessConfig(score_thresh=0.05, max_detections=10_000, topk_candidates=400)
    wrapped = DatasetClassModel(model, match_classes(model_spec, data_spec), post).eval()
    images = torch.rand(2, 3, 96, 96)
    sizes = [(96, 96), (96, 96)]
    settings = {"score_thresh": 0.05, "nms_thresh": 0.45, "topk_candidates": 400,
                "max_detections": 10_000}  # fmt: skip
    with torch.no_grad():
        full = postprocess_detections(*model(images), model.anchors, sizes, score_fn=score_fn,
                                      **settings)  # fmt: skip
        ours = postprocess_detections(*wrapped(images), wrapped.anchors, sizes,
                                      score_fn=wrapped.score_fn, **settings)  # fmt: skip
    relabel = {4: 1, 2: 3}
    dropped = 0
    for f, o in zip(full, ours, strict=True):
        keep = torch.isin(f["labels"], torch.tensor([4, 2]))
        dropped += int((~keep).sum())
        ref_labels = torch.tensor([relabel[int(k)] for k in f["labels"][keep]], dtype=torch.long)
        order_f = torch.argsort(f["scores"][keep], descending=True, stable=True)
        order_o = torch.argsort(o["scores"], descending=True, stable=True)
        assert len(order_o) == len(order_f) > 0
        torch.testing.assert_close(o["scores"][order_o], f["scores"][keep][order_f], atol=2e-6,
                                   rtol=1e-5)  # fmt: skip
        torch.testing.assert_close(o["boxes"][order_o], f["boxes"][keep][order_f])
        assert torch.equal(o["labels"][order_o], ref_labels[order_f])
    assert wrapped.report()["num_dropped_detections"] == dropped > 0


def test_restrict_to_dataset_errors_and_identity(tmp_path: Path) -> None:
    model = ssd_mobilenet_v1(2, alpha=0.25, image_size=(96, 96)).eval()
    ckpt = tmp_path / "m.pt"
    payload = {"model": model.state_dict(), "model_config": model.config.to_dict()}
    save_checkpoint({**payload, "classes": ["cat", "dog"]}, ckpt)

    Data = SimpleNamespace(classes=["cat", "dog"])
    post = PostprocessConfig()
    same, cmap = restrict_to_dataset(model, ckpt, Data, post)
    assert same is model and cmap is not None and cmap.identity
    Data.classes = ["dog"]
    sub, _ = restrict_to_dataset(model, ckpt, Data, post)
    assert isinstance(sub, DatasetClassModel) and sub.num_classes == 1
    Data.classes = ["raccoon"]
    with pytest.raises(ValueError, match=r"\['cat', 'dog'\] and the dataset's \['raccoon'\]"):
        restrict_to_dataset(model, ckpt, Data, post)
    save_checkpoint(payload, ckpt)  # no class names at all: counts must agree
    with pytest.raises(ValueError, match="stores no class names and has 2 classes"):
        restrict_to_dataset(model, ckpt, Data, post)
