"""Folder datasets for the face preset: ``class_map``, background negatives, counted skips.

The real ``face_mask`` set (700 photos; its README states 3,378 face boxes in three mask-state
classes) is the reference for the merged counts; small written folders cover the error paths.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from test_config import _compose
from test_data_helpers import write_image, write_voc_image

from detector.data import (
    DatasetError,
    DataWarning,
    FolderDetection,
    dataset_from_config,
)

MASKS = {"with_mask": "face", "without_mask": "face", "mask_weared_incorrect": "face"}


def _face_mask(shared_data: Path) -> Path:
    root = shared_data / "datasets" / "face_mask"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


def test_class_map_merges_the_real_mask_states(shared_data: Path) -> None:
    root = _face_mask(shared_data)
    raw = FolderDetection(root)
    assert raw.classes == ["mask_weared_incorrect", "with_mask", "without_mask"]
    merged = FolderDetection(root, class_map=MASKS)
    assert merged.classes == ["face"]
    assert len(merged) == 700 and merged.num_boxes() == 3378  # the figures of its README
    assert {int(lab) for e in merged.entries for lab in e.labels} == {1}
    # the same boxes, only the labels changed
    assert [len(e.boxes) for e in merged.entries] == [len(e.boxes) for e in raw.entries]


def test_face_mask_split_is_seeded_and_disjoint(shared_data: Path) -> None:
    root = _face_mask(shared_data)
    train = FolderDetection(root, "train", class_map=MASKS, val_fraction=0.2, seed=0)
    val = FolderDetection(root, "val", class_map=MASKS, val_fraction=0.2, seed=0)
    again = FolderDetection(root, "val", class_map=MASKS, val_fraction=0.2, seed=0)
    other = FolderDetection(root, "val", class_map=MASKS, val_fraction=0.2, seed=1)
    t_ids = {e.image_id for e in train.entries}
    v_ids = [e.image_id for e in val.entries]
    assert (len(t_ids), len(v_ids)) == (560, 140)
    assert not t_ids & set(v_ids)
    assert v_ids == [e.image_id for e in again.entries]
    assert v_ids != [e.image_id for e in other.entries]
    assert train.num_boxes() + val.num_boxes() == 3378


def test_face_mask_preset_reads_the_real_set(shared_data: Path) -> None:
    root = _face_mask(shared_data)
    spec = _compose(["experiment=face_mask", f"dataset.root={root}"])
    assert spec.dataset.class_map == MASKS
    assert spec.dataset.eval == "voc"
    val = dataset_from_config(spec.dataset, "val")
    assert val.classes == ["face"] and len(val) == 140


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "faces"
    images, xml = root / "images", root / "annotations"
    write_voc_image(images, xml, "a", (64, 48), [("with_mask", (5, 5, 30, 30), False)], seed=1)
    write_voc_image(
        images,
        xml,
        "b",
        (64, 48),
        [
            ("without_mask", (2, 2, 20, 20), False),
            ("mask_weared_incorrect", (30, 5, 60, 40), False),
        ],
        seed=2,
    )
    write_voc_image(images, xml, "empty", (64, 48), [], seed=3)  # annotated: no face in it
    write_image(images / "nofile.jpg", 64, 48, seed=4)  # no XML at all
    return root


def test_class_map_and_negatives(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    with pytest.warns(DataWarning, match="image left out: no XML"):
        ds = FolderDetection(root, class_map=MASKS)
    assert ds.classes == ["face"]
    assert [e.image_id for e in ds.entries] == ["a", "b", "empty"]
    assert ds.num_boxes() == 3 and ds.num_negatives == 1
    assert ds.num_unannotated == 1 and ds.num_unannotated_used == 0
    assert (
        ds.issues.counts[
            "image left out: no XML (dataset.include_unannotated=true keeps it as a negative)"
        ]
        == 1
    )
    sample = ds[2]  # the empty image is a valid sample without boxes
    assert sample.boxes.shape == (0, 4) and sample.labels.shape == (0,)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out: no warning
        kept = FolderDetection(root, class_map=MASKS, include_unannotated=True)
    assert [e.image_id for e in kept.entries] == ["a", "b", "empty", "nofile"]
    assert kept.num_negatives == 2 and kept.num_unannotated_used == 1


def test_partial_class_map_keeps_other_names(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    with pytest.warns(DataWarning):
        ds = FolderDetection(
            root, class_map={"with_mask": "masked", "mask_weared_incorrect": "masked"}
        )
    assert ds.classes == ["masked", "without_mask"]
    labels = {e.image_id: e.labels.tolist() for e in ds.entries}
    assert labels == {"a": [1], "b": [2, 1], "empty": []}


def test_class_map_errors(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    with pytest.raises(
        DatasetError, match=r"class_map names class\(es\) \['with_mak'\] that no XML"
    ):
        FolderDetection(root, class_map={"with_mak": "face"})
    with pytest.raises(DatasetError, match=r"class_map maps to unknown class\(es\) \['fcae'\]"):
        FolderDetection(root, classes=["face"], class_map={"with_mask": "fcae"})
    # a name neither mapped nor a known class: the usual error naming the XML file
    with pytest.raises(
        DatasetError, match=r"b\.xml: object 0 has unknown class name 'without_mask'"
    ):
        FolderDetection(
            root, classes=["face"], class_map={"with_mask": "face", "mask_weared_incorrect": "face"}
        )


def test_corrupt_image_is_skipped_and_counted(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "images" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.warns(DataWarning):
        ds = FolderDetection(root, class_map=MASKS)
    with pytest.warns(DataWarning, match=r"a\.jpg.*skipped, using the next image instead"):
        sample = ds[0]
    assert sample.image_id == "b"
    assert ds.issues.counts["image skipped: unreadable"] == 1


def test_images_without_faces_reach_the_loss(tmp_path: Path) -> None:
    """Face-free images load, collate and go through the loss without error. With
    ``head.loss=focal`` every anchor of them is a trained background example (a positive loss
    with gradients); with the default softmax loss, hard negatives are mined per image at
    ``neg_pos_ratio`` x its positives, as in SSD, so an image without faces adds nothing."""
    import torch

    from detector.box_ops import BoxCoder
    from detector.config import model_config_from
    from detector.data import build_transforms, collate_detection
    from detector.loss import MultiBoxLoss
    from detector.models import build_ssd

    root = _folder(tmp_path)
    ds = FolderDetection(root, class_map=MASKS, include_unannotated=True)
    spec = _compose(["experiment=face_mask", f"dataset.root={root}"])
    model = build_ssd(model_config_from(spec, 1)).train()
    transform = build_transforms("none", tuple(spec.image_size), train=False)
    batch = collate_detection([transform(ds[2]), transform(ds[3])])
    assert all(len(b) == 0 for b in batch["boxes"])
    deltas, logits = model(batch["images"])
    targets = [{"boxes": b, "labels": lab} for b, lab in zip(batch["boxes"], batch["labels"])]
    focal = MultiBoxLoss(BoxCoder(), classification="focal")
    losses = focal(deltas.float(), logits.float(), model.anchors, targets)
    assert torch.isfinite(losses["loss"]) and losses["loss"] > 0 and losses["num_pos"] == 0
    losses["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    softmax = MultiBoxLoss(BoxCoder())(deltas.float(), logits.float(), model.anchors, targets)
    assert softmax["loss"].item() == 0.0
