"""WIDER FACE evaluation: hand-computed subset APs, normalisation, thresholds, ignored faces, the
"+1" IoU, a loop-by-loop transcription of the protocol, plain AP == VOC area AP, and errors.

No PyPI package implements the official WIDER FACE evaluation (looked up with ``pip download``:
``widerface-evaluation``, ``widerface-eval``, ``wider-face-eval``, ``widerface``,
``face-evaluation``, ``face-detection-evaluation``), so the expected numbers are worked out here
from the protocol of the MATLAB ``eval_tools`` (see ``detector/evaluation/widerface.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio

from detector.evaluation import (
    ResultsFileError,
    VOCEvaluator,
    WiderFaceEvaluator,
    WiderGroundTruthError,
    build_evaluator,
)
from detector.evaluation.base import EvaluationWarning

EVENT = "0--Parade"


# ----------------------------------------------------------------------------- .mat fixtures
def _cell(items: list) -> np.ndarray:
    """A MATLAB cell column (``[n, 1]`` object array), as in the official files."""
    out = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        out[i, 0] = item
    return out


def write_wider_mat(
    folder: Path,
    events: list[tuple[str, list[tuple[str, list]]]],
    keep: dict[str, list[list[list[int]]]],
) -> Path:
    """Write ``wider_face_val.mat`` and ``wider_<subset>_val.mat`` in the official structure.

    Args:
        events: ``[(event, [(file name without .jpg, [[x, y, w, h], ...]), ...]), ...]``.
        keep: subset -> per event, per image, 1-based face indices.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sio.savemat(
        folder / "wider_face_val.mat",
        {
            "event_list": _cell([e for e, _ in events]),
            "file_list": _cell([_cell([n for n, _ in images]) for _, images in events]),
            "face_bbx_list": _cell(
                [
                    _cell([np.asarray(b, dtype=np.float64).reshape(-1, 4) for _, b in images])
                    for _, images in events
                ]
            ),
        },
    )
    for subset, per_event in keep.items():
        sio.savemat(
            folder / f"wider_{subset}_val.mat",
            {
                "gt_list": _cell(
                    [
                        _cell([np.asarray(k, dtype=np.float64).reshape(-1, 1) for k in images])
                        for images in per_event
                    ]
                )
            },
        )
    return folder


def _xyxy(b: list[float]) -> list[float]:
    return [b[0], b[1], b[0] + b[2], b[1] + b[3]]


def _pred(boxes_xyxy: list, scores: list) -> dict[str, np.ndarray]:
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return {
        "boxes": boxes,
        "scores": np.asarray(scores, dtype=np.float64),
        "labels": np.ones(len(boxes), dtype=np.int64),
    }


FACE_A, FACE_B, FACE_C = [0, 0, 20, 20], [100, 100, 20, 20], [0, 0, 30, 30]
BACKGROUND = [[50, 50, 60, 60], [200, 200, 210, 210]]


@pytest.fixture
def three_subsets(tmp_path: Path) -> Path:
    """Image a: faces A (easy, medium, hard) and B (hard); image b: face C (medium, hard)."""
    return write_wider_mat(
        tmp_path / "gt",
        [(EVENT, [("0_a", [FACE_A, FACE_B]), ("0_b", [FACE_C])])],
        {"easy": [[[1], []]], "medium": [[[1], [1]]], "hard": [[[1, 2], [1]]]},
    )


# ------------------------------------------------------------------------ hand-computed cases
def test_subsets_by_hand(three_subsets: Path) -> None:
    """Scores 1, 0.75, 0.5, 0.25, 0 (min-max normalisation leaves them): d1 on B, d2 on nothing,
    d3 on A (image a), d4 on C, d5 on nothing (image b).

    easy (A): d1, d4 ignored; points (p, r): 0.75 -> (0/1, 0), 0.5 -> (1/2, 1), 0 -> (1/3, 1):
        AP = 1 * 1/2.
    medium (A, C): d1 ignored; 0.75 -> (0, 0), 0.5 -> (1/2, 1/2), 0.25 -> (2/3, 1), 0 -> (2/4, 1):
        envelope 2/3 from recall 0 to 1: AP = 2/3.
    hard (A, B, C): 1 -> (1, 1/3), 0.75 -> (1/2, 1/3), 0.5 -> (2/3, 2/3), 0.25 -> (3/4, 1),
        0 -> (3/5, 1): AP = 1/3 * 1 + 2/3 * 3/4 = 5/6.
    """
    ev = WiderFaceEvaluator(["face"], gt_dir=three_subsets)
    ev.process(
        [f"{EVENT}/0_a.jpg", "0_b"],  # the dataset's id and the bare file name
        [
            _pred([_xyxy(FACE_B), BACKGROUND[0], _xyxy(FACE_A)], [1.0, 0.75, 0.5]),
            _pred([_xyxy(FACE_C), BACKGROUND[1]], [0.25, 0.0]),
        ],
    )
    m = ev.evaluate()
    assert m["AP/easy"] == pytest.approx(1 / 2, abs=1e-12)
    assert m["AP/medium"] == pytest.approx(2 / 3, abs=1e-12)
    assert m["AP/hard"] == pytest.approx(5 / 6, abs=1e-12)
    assert m["mAP"] == pytest.approx((1 / 2 + 2 / 3 + 5 / 6) / 3, abs=1e-12)
    assert [m[f"num_faces/{s}"] for s in ("easy", "medium", "hard")] == [1, 2, 3]
    assert [m[f"num_tp/{s}"] for s in ("easy", "medium", "hard")] == [1, 2, 3]
    assert [m[f"num_fp/{s}"] for s in ("easy", "medium", "hard")] == [2, 2, 2]
    assert "official protocol" in m["protocol"]


def test_normalisation_and_input_order(three_subsets: Path) -> None:
    """Any increasing affine map of the scores gives the same APs (min-max normalisation), and
    so does the order in which an image's detections come (they are sorted per image)."""
    boxes_a = [_xyxy(FACE_B), BACKGROUND[0], _xyxy(FACE_A)]
    boxes_b = [_xyxy(FACE_C), BACKGROUND[1]]
    scores_a, scores_b = np.array([1.0, 0.75, 0.5]), np.array([0.25, 0.0])
    results = []
    for scale, shift, flip in ((1.0, 0.0, False), (0.37, 3.0, False), (5.0, -2.0, True)):
        ev = WiderFaceEvaluator(gt_dir=three_subsets)
        sa = scores_a * scale + shift
        ba = boxes_a[::-1] if flip else boxes_a
        ev.process(
            [f"{EVENT}/0_a.jpg", f"{EVENT}/0_b.jpg"],
            [_pred(ba, sa[::-1] if flip else sa), _pred(boxes_b, scores_b * scale + shift)],
        )
        results.append([ev.evaluate()[f"AP/{s}"] for s in ("easy", "medium", "hard")])
    np.testing.assert_allclose(results[1], results[0], atol=1e-12)
    np.testing.assert_allclose(results[2], results[0], atol=1e-12)


def _one_image(tmp_path: Path, faces: list, keep: list[int]) -> Path:
    return write_wider_mat(
        tmp_path / "gt1",
        [(EVENT, [("0_a", faces)])],
        {s: [[keep]] for s in ("easy", "medium", "hard")},
    )


def test_normalisation_separates_close_scores(tmp_path: Path) -> None:
    """TP 0.9004, FP 0.9003, TP 0.9001 on faces A, B. Raw, all three would pass the threshold 0.9
    together (one point (2/3, 1): AP 2/3); normalised they become 1, 2/3, 0: points (1, 1/2),
    (1/2, 1/2), (2/3, 1): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6."""
    gt = _one_image(tmp_path, [FACE_A, FACE_B], [1, 2])
    ev = WiderFaceEvaluator(gt_dir=gt, subsets=("easy",))
    ev.process(
        [f"{EVENT}/0_a.jpg"],
        [_pred([_xyxy(FACE_A), BACKGROUND[0], _xyxy(FACE_B)], [0.9004, 0.9003, 0.9001])],
    )
    assert ev.evaluate()["AP/easy"] == pytest.approx(5 / 6, abs=1e-12)


def test_thresholds_quantise_scores(tmp_path: Path) -> None:
    """Scores 1 (TP), 0.6004 (TP), 0.6001 (FP), 0 (FP) on faces A, B, C: 0.6004 and 0.6001 both
    first pass the threshold 1 - 400/1000 = 0.6, so the points are (1, 1/3), (2/3, 2/3),
    (2/4, 2/3): AP = 1/3 + 1/3 * 2/3 = 5/9. Exact ranking (plain AP) has the point (1, 2/3)
    between them: AP = 2/3."""
    gt = _one_image(tmp_path, [FACE_A, FACE_B, [300, 300, 20, 20]], [1, 2, 3])
    pred = _pred(
        [_xyxy(FACE_A), _xyxy(FACE_B), BACKGROUND[0], BACKGROUND[1]], [1.0, 0.6004, 0.6001, 0.0]
    )
    ev = WiderFaceEvaluator(gt_dir=gt, subsets=("hard",))
    ev.process([f"{EVENT}/0_a.jpg"], [pred])
    assert ev.evaluate()["AP/hard"] == pytest.approx(5 / 9, abs=1e-12)
    record = {
        "image_id": f"{EVENT}/0_a.jpg",
        "boxes": np.array([_xyxy(b) for b in (FACE_A, FACE_B, [300, 300, 20, 20])]),
        "labels": np.ones(3, dtype=np.int64),
        "ignore": np.zeros(3, dtype=bool),
    }
    plain = WiderFaceEvaluator(records=[record])
    plain.process([f"{EVENT}/0_a.jpg"], [pred])
    m = plain.evaluate()
    assert m["AP"] == m["mAP"] == pytest.approx(2 / 3, abs=1e-12)
    assert "plain AP" in m["protocol"]


def test_duplicate_and_plus_one_iou(tmp_path: Path) -> None:
    """Faces A = [0, 0, 10, 10], B = [20, 0, 10, 10], C far away (xywh, all kept). d1 (0.9) is B;
    d2 (0.5) = [22, 0, 32, 10] hits B again (IoU 99 / 143 with "+1"): a false positive; d3 (0.1)
    = [0, 0, 10, 4.8] on A: IoU 48 / 100 = 0.48 as continuous boxes but 11 * 5.8 / 121 = 0.527
    with the "+1" convention, a true positive. Normalised 1, 0.5, 0: points (1, 1/3),
    (1/2, 1/3), (2/3, 2/3): AP = 1/3 + 1/3 * 2/3."""
    faces = [[0, 0, 10, 10], [20, 0, 10, 10], [100, 0, 100, 100]]
    gt = _one_image(tmp_path, faces, [1, 2, 3])
    d1 = _xyxy(faces[1])
    d2 = [22, 0, 32, 10]
    d3 = [0, 0, 10, 4.8]
    ev = WiderFaceEvaluator(gt_dir=gt, subsets=("easy",))
    ev.process([f"{EVENT}/0_a.jpg"], [_pred([d1, d2, d3], [0.9, 0.5, 0.1])])
    m = ev.evaluate()
    assert (m["num_tp/easy"], m["num_fp/easy"]) == (2, 1)
    assert m["AP/easy"] == pytest.approx(1 / 3 + 1 / 3 * 2 / 3, abs=1e-12)


def test_no_fallback_to_second_best_face(tmp_path: Path) -> None:
    """Faces A = [0, 0, 10, 10] and B = [1, 0, 10, 10] overlap; d1 takes A, d2 = A again (IoU 1
    with A, 0.83 with B): a false positive although B is free. AP = 1/2 * 1 (point (1, 1/2),
    then (1/2, 1/2))."""
    gt = _one_image(tmp_path, [[0, 0, 10, 10], [1, 0, 10, 10]], [1, 2])
    ev = WiderFaceEvaluator(gt_dir=gt, subsets=("medium",))
    ev.process([f"{EVENT}/0_a.jpg"], [_pred([[0, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.2])])
    m = ev.evaluate()
    assert (m["num_tp/medium"], m["num_fp/medium"]) == (1, 1)
    assert m["AP/medium"] == pytest.approx(0.5, abs=1e-12)


def test_images_without_faces_or_predictions(tmp_path: Path) -> None:
    """The reference skips images without faces (their detections are not false positives) and
    counts the faces of images without predictions as missed."""
    gt = write_wider_mat(
        tmp_path / "gt",
        [(EVENT, [("0_a", [FACE_A]), ("0_empty", []), ("0_unseen", [FACE_B])])],
        {"easy": [[[1], [], [1]]]},
    )
    ev = WiderFaceEvaluator(gt_dir=gt, subsets=("easy",))
    ev.process(
        [f"{EVENT}/0_a.jpg", f"{EVENT}/0_empty.jpg"],
        [_pred([_xyxy(FACE_A), BACKGROUND[0]], [0.5, 0.0]), _pred([BACKGROUND[1]], [1.0])],
    )
    with pytest.warns(EvaluationWarning, match="1 of the 3 images"):
        m = ev.evaluate()
    # Scores 0.5 -> 0.5, 0 -> 0, the skipped 1.0 -> 1: points (1, 1/2), (1/2, 1/2): AP 1/2.
    assert m["num_faces/easy"] == 2
    assert m["num_detections_on_images_without_faces"] == 1
    assert (m["num_tp/easy"], m["num_fp/easy"]) == (1, 1)
    assert m["AP/easy"] == pytest.approx(0.5, abs=1e-12)


# --------------------------------------------------- a loop-by-loop transcription of the protocol
def _reference_subset_ap(gt: dict, preds: dict, keep: dict, thresh_num: int = 1000) -> float:
    """The protocol written out with plain loops over events, images, detections and thresholds.

    ``gt``: image -> [N, 4] xywh; ``preds``: image -> [K, 5] ``x y w h score``;
    ``keep``: image -> 1-based kept face indices.
    """
    all_scores = [p[:, 4] for p in preds.values() if len(p)]
    lo = min(float(s.min()) for s in all_scores)
    hi = max(float(s.max()) for s in all_scores)
    curve = np.zeros((thresh_num, 2))
    count_face = 0
    for image, faces in gt.items():
        kept = keep[image]
        count_face += len(kept)
        pred = preds.get(image, np.zeros((0, 5)))
        if len(faces) == 0 or len(pred) == 0:
            continue
        pred = pred[np.argsort(-pred[:, 4], kind="stable")].copy()
        pred[:, 4] = (pred[:, 4] - lo) / (hi - lo)
        in_subset = [i + 1 in kept for i in range(len(faces))]
        state = [0] * len(faces)  # 0 not found, 1 recalled, -1 matched while ignored
        is_proposal = [1] * len(pred)
        recalled_so_far = []
        for h in range(len(pred)):
            px, py = pred[h, 0], pred[h, 1]
            px2, py2 = px + pred[h, 2], py + pred[h, 3]  # corners first, as the reference
            best, best_iou = 0, -1.0
            for k, (gx, gy, gw, gh) in enumerate(faces):
                gx2, gy2 = gx + gw, gy + gh
                iw = min(px2, gx2) - max(px, gx) + 1
                ih = min(py2, gy2) - max(py, gy) + 1
                iou = 0.0
                if iw > 0 and ih > 0:
                    area_p = (px2 - px + 1) * (py2 - py + 1)
                    area_g = (gx2 - gx + 1) * (gy2 - gy + 1)
                    iou = iw * ih / (area_p + area_g - iw * ih)
                if iou > best_iou:
                    best, best_iou = k, iou
            if best_iou >= 0.5:
                if not in_subset[best]:
                    state[best] = -1
                    is_proposal[h] = 0
                elif state[best] == 0:
                    state[best] = 1
            recalled_so_far.append(sum(1 for s in state if s == 1))
        for t in range(thresh_num):
            thresh = 1 - (t + 1) / thresh_num
            last = -1
            for h in range(len(pred)):
                if pred[h, 4] >= thresh:
                    last = h
            if last >= 0:
                curve[t, 0] += sum(is_proposal[: last + 1])
                curve[t, 1] += recalled_so_far[last]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = curve[:, 1] / curve[:, 0]
    recall = curve[:, 1] / count_face
    # VOC area rule; points without proposals (precision 0/0) have recall 0 and add no area.
    precision = np.nan_to_num(precision, nan=0.0)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return float(sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)))


def _random_case(rng: np.random.Generator, n_images: int = 12):
    images, gt, preds, keeps = [], {}, {}, {"easy": {}, "medium": {}, "hard": {}}
    for j in range(n_images):
        name = f"0_img_{j}"
        n = int(rng.integers(0, 7))
        xy = rng.uniform(0, 300, (n, 2))
        wh = rng.uniform(4, 60, (n, 2))
        faces = np.round(np.concatenate([xy, wh], axis=1))
        # detections: jittered copies of faces (some twice), plus clutter
        det = []
        for f in faces:
            for _ in range(int(rng.integers(0, 3))):
                det.append(f + rng.normal(0, f[2:].mean() * 0.15, 4) * [1, 1, 0.5, 0.5])
        for _ in range(int(rng.integers(0, 4))):
            det.append(np.r_[rng.uniform(0, 300, 2), rng.uniform(4, 60, 2)])
        det = np.asarray(det).reshape(-1, 4)
        det[:, 2:] = np.abs(det[:, 2:])
        scores = np.round(rng.uniform(0, 1, len(det)), int(rng.integers(2, 6)))
        preds[name] = np.concatenate([det, scores[:, None]], axis=1)
        gt[name] = faces
        hard = sorted(rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False) + 1)
        medium = [k for k in hard if rng.random() < 0.7]
        easy = [k for k in medium if rng.random() < 0.6]
        for s, k in (("easy", easy), ("medium", medium), ("hard", hard)):
            keeps[s][name] = [int(i) for i in k]
        images.append((name, faces.tolist()))
    return images, gt, preds, keeps


def _random_two_events(tmp_path: Path, seed: int):
    """A random case split over two events, its ``.mat`` ground truth written under tmp_path."""
    images, gt, preds, keeps = _random_case(np.random.default_rng(seed))
    half = len(images) // 2
    events = [(EVENT, images[:half]), ("1--Handshaking", images[half:])]
    folder = write_wider_mat(
        tmp_path / "gt",
        events,
        {
            s: [[keeps[s][n] for n, _ in imgs] for _, imgs in events]
            for s in ("easy", "medium", "hard")
        },
    )
    return events, gt, preds, keeps, folder


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_loop_transcription(tmp_path: Path, seed: int) -> None:
    events, gt, preds, keeps, folder = _random_two_events(tmp_path, seed)
    ev = WiderFaceEvaluator(gt_dir=folder)
    ids, batch = [], []
    for event, imgs in events:
        for name, _ in imgs:
            p = preds[name]
            ids.append(f"{event}/{name}.jpg")
            batch.append(_pred([_xyxy(b) for b in p[:, :4]], p[:, 4]))
    ev.process(ids, batch)
    m = ev.evaluate()
    for s in ("easy", "medium", "hard"):
        expected = _reference_subset_ap(gt, preds, keeps[s])
        assert m[f"AP/{s}"] == pytest.approx(expected, abs=1e-12), s
    assert m["AP/hard"] > 0.1  # the case is not degenerate


# ---------------------------------------------------------------- plain AP == VOC area AP
@pytest.mark.parametrize(("seed", "with_ignored"), [(0, False), (1, False), (2, True), (3, True)])
def test_plain_ap_equals_voc_area_ap(seed: int, with_ignored: bool) -> None:
    rng = np.random.default_rng(seed)
    _, gt, preds, _ = _random_case(rng, n_images=20)
    records, ids, batch = [], [], []
    for name, faces in gt.items():
        boxes = np.array([_xyxy(b) for b in faces]).reshape(-1, 4)
        ignore = rng.random(len(boxes)) < 0.3 if with_ignored else np.zeros(len(boxes), bool)
        records.append(
            {
                "image_id": f"{EVENT}/{name}.jpg",
                "boxes": boxes,
                "labels": np.ones(len(boxes), np.int64),
                "ignore": ignore,
            }
        )
        p = preds[name]
        ids.append(f"{EVENT}/{name}.jpg")
        batch.append(_pred([_xyxy(b) for b in p[:, :4]], p[:, 4]))
    wider = build_evaluator("widerface", class_names=["face"], records=records)
    voc = VOCEvaluator(["face"], records, metric="voc", use_07_plus_one=True)
    wider.process(ids, batch)
    voc.process(ids, batch)
    a, b = wider.evaluate(), voc.evaluate()
    assert a["AP"] == pytest.approx(b["AP/face"], abs=1e-12)
    assert (a["num_tp/all"], a["num_fp/all"], a["num_faces/all"]) == (
        b["num_tp/face"],
        b["num_fp/face"],
        b["num_gt/face"],
    )
    assert 0.1 < a["AP"] < 1.0


# ------------------------------------------------------------------------- protocol plumbing
def test_state_round_trip_and_results_file(three_subsets: Path, tmp_path: Path) -> None:
    preds = [
        _pred([_xyxy(FACE_B), BACKGROUND[0], _xyxy(FACE_A)], [1.0, 0.75, 0.5]),
        _pred([_xyxy(FACE_C), BACKGROUND[1]], [0.25, 0.0]),
    ]
    ids = [f"{EVENT}/0_a.jpg", f"{EVENT}/0_b.jpg"]
    rank0, rank1 = (
        WiderFaceEvaluator(gt_dir=three_subsets),
        WiderFaceEvaluator(gt_dir=three_subsets),
    )
    rank0.process(ids[:1], preds[:1])
    rank1.process(ids[1:], preds[1:])
    merged = WiderFaceEvaluator(gt_dir=three_subsets)
    merged.load_state(rank0.state() + rank1.state())
    m = merged.evaluate()
    assert m["AP/hard"] == pytest.approx(5 / 6, abs=1e-12)
    # The detections as a COCO-format results file, images named by file only.
    rows = [
        {"image_id": i.split("/")[1], "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
         "score": s}
        for i, p in zip(ids, preds)
        for (x1, y1, x2, y2), s in zip(p["boxes"].tolist(), p["scores"].tolist())
    ]  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rows))
    out = WiderFaceEvaluator(gt_dir=three_subsets).evaluate_results_file(path, out_dir=tmp_path)
    assert out["AP/easy"] == pytest.approx(m["AP/easy"], abs=1e-12)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["protocol"] == m["protocol"]
    assert saved["AP/medium"] == pytest.approx(2 / 3, abs=1e-12)


# -------------------------------------------------------------------------------------- errors
def test_missing_subset_file_is_named(three_subsets: Path) -> None:
    (three_subsets / "wider_medium_val.mat").unlink()
    with pytest.raises(FileNotFoundError, match=r"wider_medium_val\.mat"):
        WiderFaceEvaluator(gt_dir=three_subsets)
    # Only the subsets asked for are read.
    assert WiderFaceEvaluator(gt_dir=three_subsets, subsets=("easy", "hard")).subsets == (
        "easy",
        "hard",
    )


def test_unknown_image_names_the_file(three_subsets: Path) -> None:
    ev = WiderFaceEvaluator(gt_dir=three_subsets)
    with pytest.raises(ResultsFileError, match=r"0_zzz\.jpg.*wider_face_val\.mat"):
        ev.process([f"{EVENT}/0_zzz.jpg"], [_pred([], [])])


def test_malformed_ground_truth(tmp_path: Path, three_subsets: Path) -> None:
    sio.savemat(three_subsets / "wider_easy_val.mat", {"not_gt_list": np.zeros(2)})
    with pytest.raises(WiderGroundTruthError, match=r"wider_easy_val\.mat.*gt_list"):
        WiderFaceEvaluator(gt_dir=three_subsets)
    write_wider_mat(
        tmp_path / "bad", [(EVENT, [("0_a", [FACE_A])])], {s: [[[2]]] for s in ("easy",)}
    )
    with pytest.raises(WiderGroundTruthError, match=r"1-based face indices in 1\.\.1"):
        WiderFaceEvaluator(gt_dir=tmp_path / "bad", subsets=("easy",))


def test_one_class_and_records_required() -> None:
    with pytest.raises(ValueError, match="one class"):
        WiderFaceEvaluator(["face", "hand"], records=[])
    with pytest.raises(ValueError, match="records"):
        build_evaluator("widerface", class_names=["face"])


def test_ties_take_the_first_face(tmp_path: Path) -> None:
    """Two identical faces, only the first in the subset: a detection on them matches the first
    (IoU ties go to the lower index) and is a true positive, AP 1; were it the second, it would
    be ignored and the AP 0."""
    gt = _one_image(tmp_path, [FACE_A, FACE_A], [1])
    ev = WiderFaceEvaluator(gt_dir=gt, subsets=("easy",))
    ev.process([f"{EVENT}/0_a.jpg"], [_pred([_xyxy(FACE_A), BACKGROUND[0]], [0.9, 0.1])])
    m = ev.evaluate()
    assert (m["num_tp/easy"], m["num_fp/easy"]) == (1, 1)
    assert m["AP/easy"] == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------ results-file paths: .txt folders, no images
def _write_txt_folder(folder: Path, events: list, preds: dict[str, np.ndarray]) -> Path:
    """The eval_tools prediction layout: ``<event>/<name>.txt`` with the name, the count and
    one ``x y w h score`` line per detection."""
    for event, imgs in events:
        (folder / event).mkdir(parents=True, exist_ok=True)
        for name, _ in imgs:
            p = preds[name]
            lines = [name, str(len(p))] + [" ".join(repr(float(v)) for v in row) for row in p]
            (folder / event / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_txt_prediction_folder_matches_loop_transcription(tmp_path: Path) -> None:
    from detector.evaluation import evaluate_results_file

    events, gt, preds, keeps, folder = _random_two_events(tmp_path, 5)
    pred_dir = _write_txt_folder(tmp_path / "pred", events, preds)
    m = evaluate_results_file(pred_dir, kind="widerface", gt_dir=folder, out_dir=tmp_path / "o")
    for s in ("easy", "medium", "hard"):
        assert m[f"AP/{s}"] == pytest.approx(_reference_subset_ap(gt, preds, keeps[s]), abs=1e-12)
    assert m["results_file"] == str(pred_dir)


def test_txt_prediction_folder_errors_name_the_file(tmp_path: Path, three_subsets: Path) -> None:
    (tmp_path / "empty").mkdir()
    ev = WiderFaceEvaluator(gt_dir=three_subsets)
    with pytest.raises(ResultsFileError, match=r"no \.txt prediction files"):
        ev.evaluate_results_file(tmp_path / "empty")
    bad = tmp_path / "bad" / EVENT
    bad.mkdir(parents=True)
    (bad / "0_a.txt").write_text("0_a\n2\n1 2 3 4 0.5\n")
    with pytest.raises(ResultsFileError, match=r"0_a\.txt: line 2 announces 2 face\(s\) but 1"):
        ev.evaluate_results_file(tmp_path / "bad")
    (bad / "0_a.txt").write_text("0_a\n1\n1 2 three 4 0.5\n")
    with pytest.raises(ResultsFileError, match=r"0_a\.txt, line 3: expected 'x y w h score'"):
        ev.evaluate_results_file(tmp_path / "bad")


def test_plain_ap_from_annotation_file_without_images(tmp_path: Path) -> None:
    """``wider_face_val_bbx_gt.txt`` alone (no image files) is the ground truth of plain AP;
    the result equals the VOC area AP on the same records (the documented identity)."""
    from detector.data import build_dataset
    from detector.engine.evaluate import evaluate_results_on

    rng = np.random.default_rng(4)
    images, _, preds, _ = _random_case(rng)
    lines = []
    for name, faces in images:
        lines += [f"{EVENT}/{name}.jpg", str(len(faces))]
        lines += [" ".join(str(int(v)) for v in f) + " 0 0 0 0 0 0" for f in faces]
        if not faces:
            lines.append("0 0 0 0 0 0 0 0 0 0")
    root = tmp_path / "wider"
    (root / "wider_face_split").mkdir(parents=True)
    (root / "wider_face_split" / "wider_face_val_bbx_gt.txt").write_text("\n".join(lines) + "\n")
    dataset = build_dataset("widerface", "val", root=root, check_files=False)
    pred_dir = _write_txt_folder(tmp_path / "pred", [(EVENT, images)], preds)
    m = evaluate_results_on(pred_dir, None, metric="widerface", dataset=dataset)
    voc = VOCEvaluator(["face"], dataset.records(), metric="voc", use_07_plus_one=True)
    ids = [f"{EVENT}/{name}.jpg" for name, _ in images]
    voc.process(
        ids, [_pred([_xyxy(b) for b in preds[n][:, :4]], preds[n][:, 4]) for n, _ in images]
    )
    assert m["AP"] == pytest.approx(voc.evaluate()["AP/face"], abs=1e-12)
    assert m["num_faces/all"] == sum(len(f) for _, f in images) and 0.1 < m["AP"] < 1.0
