"""Single-source metrics against separate numpy references of the published formulas and hand cases."""

import json

import numpy as np
import pytest
from sklearn.metrics import auc as sklearn_auc

from shared_data import shared_path

from keras_avloc.metrics import (
    Evaluator,
    binarize_maps,
    box_gt_map,
    ciou,
    flickr_gt_map,
    mask_iou,
    pointing_game,
    resize_maps,
    success_auc,
    success_curve,
)



# ---- independent references, written like the official per-sample evaluators -------------------
def reference_ciou(heatmap_224, gt_map, strict=False):
    value = heatmap_224.copy()
    if value.max() - value.min() != 0:
        value = (value - value.min()) / (value.max() - value.min())
    threshold = np.sort(value.flatten())[int(value.shape[0] * value.shape[1] * 0.5)]
    infer = np.zeros(value.shape)
    infer[(value > threshold) if strict else (value >= threshold)] = 1
    return np.sum(infer * gt_map) / (np.sum(gt_map) + np.sum(infer * (gt_map == 0)))


def reference_auc(cious):
    fractions = [np.sum(np.array(cious) >= 0.05 * i) / len(cious) for i in range(21)]
    return sklearn_auc([0.05 * i for i in range(21)], fractions)


def reference_box_map(boxes, size=224):
    gt = np.zeros([size, size])
    for box in boxes:
        x1, y1, x2, y2 = [int(size * max(v, 0)) for v in box]
        temp = np.zeros([size, size])
        temp[y1:y2, x1:x2] = 1
        gt += temp
    gt[gt > 0] = 1
    return gt


def random_boxes(rng, count):
    corners = rng.uniform(-0.05, 1.0, size=(count, 4))
    return np.concatenate([np.minimum(corners[:, :2], corners[:, 2:]), np.maximum(corners[:, :2], corners[:, 2:])], 1)


# ---- cIoU --------------------------------------------------------------------------------------
def test_ciou_matches_official_loop_on_full_resolution_maps():
    rng = np.random.default_rng(0)
    heat = rng.normal(size=(24, 224, 224)).astype(np.float32)
    heat[3] = np.round(heat[3])  # many ties at the median
    gt = np.stack([reference_box_map(random_boxes(rng, 2)) for _ in range(24)])
    expected = np.array([reference_ciou(h, g) for h, g in zip(heat, gt)])
    np.testing.assert_array_equal(ciou(heat, gt), expected)
    expected_strict = np.array([reference_ciou(h, g, strict=True) for h, g in zip(heat, gt)])
    np.testing.assert_array_equal(ciou(heat, gt, strict=True), expected_strict)


def test_ciou_of_slavc_fixed_threshold_mode_thresholds_the_fixed_scale_map():
    """SLAVC's test without --relative_prediction: pred_thr 0.5 on the fixed-range map (s/τ mapped from
    [-1/τ, 1/τ] to [0, 1]), not on the per-image min-max normalised one (reference: the published loop)."""
    rng = np.random.default_rng(5)
    tau = 0.03
    cosine = np.clip(rng.normal(0.1, 0.3, size=(12, 224, 224)), -1, 1)
    cosine[4] = -0.4 + 0.2 * rng.random((224, 224))  # below zero everywhere: the fixed mode predicts nothing
    scores = ((cosine / tau + 1 / tau) / (2 / tau)).astype(np.float32)
    gt = np.stack([reference_box_map(random_boxes(rng, 1)) for _ in range(12)])
    expected = []
    for value, gt_map in zip(scores, gt):
        infer = (value >= 0.5).astype(np.float64)
        denominator = np.sum(gt_map) + np.sum(infer * (gt_map == 0))
        expected.append(np.sum(infer * gt_map) / denominator if denominator else 0.0)
    np.testing.assert_allclose(ciou(scores, gt, threshold=0.5, normalize=False), expected, rtol=1e-12)
    assert not binarize_maps(scores[4:5], threshold=0.5, normalize=False).any()
    assert 0.3 < binarize_maps(scores[4:5], threshold=0.5).mean() < 0.7  # normalised: about half the pixels
    # the median threshold (--relative_prediction) does not depend on the normalisation
    np.testing.assert_array_equal(binarize_maps(scores, normalize=False), binarize_maps(scores))


def test_ciou_upsampling_matches_pytorch_align_corners_and_opencv():
    torch = pytest.importorskip("torch")
    import cv2

    rng = np.random.default_rng(1)
    small = rng.random((12, 7, 7)).astype(np.float32)
    gt = np.stack([reference_box_map(random_boxes(rng, 1)) for _ in range(12)])
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(small[:, None]), size=(224, 224), mode="bilinear", align_corners=True
    )[:, 0].numpy()
    np.testing.assert_allclose(resize_maps(small), upsampled, atol=2e-6)
    np.testing.assert_array_equal(ciou(small, gt), [reference_ciou(u, g) for u, g in zip(upsampled, gt)])
    bicubic = torch.nn.functional.interpolate(
        torch.from_numpy(small[:, None]), size=(224, 224), mode="bicubic", align_corners=True
    )[:, 0].numpy()
    np.testing.assert_allclose(resize_maps(small, resize="bicubic_align_corners"), bicubic, atol=5e-6)
    opencv = np.stack([cv2.resize(m, (224, 224), interpolation=cv2.INTER_LINEAR) for m in small])
    np.testing.assert_allclose(resize_maps(small, resize="half_pixel"), opencv, atol=2e-6)


def test_ciou_hand_cases():
    gt = np.zeros((1, 4, 4))
    gt[0, :, :2] = 1
    perfect = np.zeros((1, 4, 4))
    perfect[0, :, :2] = 5.0
    assert ciou(perfect, gt)[0] == 1.0
    # Ties at the median: 10 zeros and 6 ones; sorted[8] = 0 so `>=` marks all 16 pixels positive.
    tied = np.zeros((1, 4, 4))
    tied[0].flat[:6] = 1.0
    gt_four = np.zeros((1, 4, 4))
    gt_four[0, 0, :4] = 1  # pixels 0..3, all inside the ones
    assert ciou(tied, gt_four)[0] == pytest.approx(4 / (4 + 12))
    assert ciou(tied, gt_four, strict=True)[0] == pytest.approx(4 / (4 + 2))  # LVS `>`: 6 positives
    # Empty ground truth: intersection 0, denominator = positives -> 0.
    assert ciou(perfect, np.zeros((1, 4, 4)))[0] == 0.0
    # All-zero heatmap: constant, every pixel positive -> ΣG / (ΣG + #background).
    assert ciou(np.zeros((1, 4, 4)), gt)[0] == pytest.approx(8 / 16)
    # Soft (Flickr) ground truth: 0.5-valued pixels count half in the intersection and not as background.
    soft = np.zeros((1, 4, 4))
    soft[0, :, 0] = 1.0
    soft[0, :, 1] = 0.5
    assert ciou(perfect, soft)[0] == pytest.approx((4 + 2) / (6 + 0))


def test_ciou_rejects_nan_and_bad_shapes():
    with pytest.raises(ValueError, match="NaN"):
        ciou(np.full((1, 4, 4), np.nan), np.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        binarize_maps(np.array([[[0.0, np.inf], [1.0, 2.0]]]), size=2)
    with pytest.raises(ValueError):
        ciou(np.zeros((2, 4, 4)), np.zeros((1, 4, 4)))


# ---- success curve / AUC ------------------------------------------------------------------------
def test_success_auc_matches_sklearn_reference():
    rng = np.random.default_rng(2)
    values = rng.random(500)
    at_half, auc = success_auc(values)
    assert at_half == np.mean(values >= 0.5)
    assert auc == reference_auc(values)


def test_success_auc_hand_cases_and_float_thresholds():
    # [1, 0]: the curve is 1 at t = 0 and 0.5 elsewhere: 0.05 * (1 + 0.5) / 2 + 19 * 0.05 * 0.5 = 0.5125
    at_half, auc = success_auc([1.0, 0.0])
    assert at_half == 0.5 and auc == pytest.approx(0.5125)
    # The official thresholds are 0.05 * i in floating point: 0.05 * 3 = 0.15000000000000002 > 0.15, so a
    # cIoU of exactly 0.15 does not count at that threshold.
    curve = success_curve([0.15])
    assert curve[2] == 1.0 and curve[3] == 0.0
    assert success_auc([1.0]) == (1.0, pytest.approx(1.0))


# ---- ground truth --------------------------------------------------------------------------------
def test_box_gt_map_hand_case_and_reference():
    gt = box_gt_map([[0.1, 0.2, 0.55, 0.5]], size=10)  # x 1..5, y 2..5
    assert gt.sum() == 12 and gt[2:5, 1:5].all() and gt.dtype == np.float32
    assert box_gt_map([[-0.2, -0.1, 0.3, 0.3]], size=10)[:3, :3].all()
    assert box_gt_map(np.zeros((0, 4)), size=8).sum() == 0
    rng = np.random.default_rng(3)
    for _ in range(5):
        boxes = random_boxes(rng, 3)
        np.testing.assert_array_equal(box_gt_map(boxes), reference_box_map(boxes))


def test_flickr_gt_map_soft_consensus():
    # Official: int(224 * px / 256) in 256-pixel units: columns [0, 112) and [56, 168), overlap [56, 112).
    first = [[0, 0, 128 / 256, 1.0]]
    second = [[64 / 256, 0, 192 / 256, 1.0]]
    gt = flickr_gt_map([first, second])
    assert gt[0, 0] == 0.5 and gt[0, 100] == 1.0 and gt[0, 150] == 0.5 and gt[0, 200] == 0.0
    three = flickr_gt_map([first, first, first])
    assert three.max() == 1.0  # capped
    reference = np.zeros((224, 224))
    for px in ([0, 0, 128, 256], [64, 0, 192, 256]):
        x1, y1, x2, y2 = [int(224 * v / 256) for v in px]
        reference[y1:y2, x1:x2] += 1
    reference = np.minimum(reference / 2, 1)
    np.testing.assert_array_equal(gt, reference)


def test_box_gt_map_on_shared_vggss_annotations():
    path = shared_path("annotations", "vggss.json")
    records = json.loads(path.read_text())[:50]
    for record in records:
        np.testing.assert_array_equal(box_gt_map(record["bbox"]), reference_box_map(record["bbox"]))


# ---- pointing game / mask IoU --------------------------------------------------------------------
def test_pointing_game_and_mask_iou_hand_cases():
    gt = np.zeros((2, 4, 4))
    gt[:, :2, :2] = 1
    heat = np.zeros((2, 4, 4))
    heat[0, 1, 1] = 3.0  # inside
    heat[1, 3, 3] = 3.0  # outside
    np.testing.assert_array_equal(pointing_game(heat, gt), [1.0, 0.0])
    mask = np.zeros((1, 4, 4))
    mask[0, :, :3] = 1  # 12 pixels
    half = np.zeros((1, 4, 4))
    half[0, :, :2] = 1  # top 50% = 8 pixels, all inside the mask
    assert mask_iou(half, mask)[0] == pytest.approx(8 / 12)


def test_evaluator_matches_functions_and_excludes_silent_samples():
    rng = np.random.default_rng(4)
    heat = rng.random((40, 224, 224)).astype(np.float32)
    gt = np.stack([reference_box_map(random_boxes(rng, 1)) for _ in range(40)])
    kinds = ["single"] * 30 + ["silent"] * 5 + ["offscreen"] * 5
    evaluator = Evaluator("stamps")
    for start in range(0, 40, 16):
        evaluator.update(heat[start : start + 16], gt[start : start + 16], kinds=kinds[start : start + 16])
    result = evaluator.result()
    # the references are the official-style per-sample loops above, not the module's own functions
    values = np.array([reference_ciou(h, g) for h, g in zip(heat[:30], gt[:30])])
    hits = [g.flat[int(np.argmax(h))] > 0 for h, g in zip(heat[:30], gt[:30])]
    assert result["num_samples"] == 40 and result["num_evaluated"] == 30
    assert result["ciou@0.5"] == np.mean(values >= 0.5)
    assert result["auc"] == pytest.approx(reference_auc(values), abs=1e-12)
    assert result["mean_ciou"] == pytest.approx(values.mean())
    assert result["pointing_game"] == pytest.approx(np.mean(hits))
    assert result["extended"]["num_without_object"] == 10
    # SLAVC's whole table: LocAcc over the visible samples; size subsets by the ground-truth area on the 224 grid
    table = result["extended_table"]
    assert table["LocAcc"] == pytest.approx(np.mean(values >= 0.5))
    areas = gt[:30].reshape(30, -1).sum(axis=1)
    small, large = areas < 32**2, (areas >= 96**2) & (areas < 144**2)
    assert small.sum() == 9 and large.sum() == 6 and not (areas >= 144**2).any()  # this seed's boxes
    assert table["Precision-small@50"] == pytest.approx(np.mean(values[small] >= 0.5))
    assert table["Precision-large@75"] == pytest.approx(np.mean(values[large] >= 0.75))
    assert table["AP-huge@50"] is None  # an empty subset
    json.dumps(result)
    with pytest.raises(ValueError):
        Evaluator("nope")
    with pytest.raises(ValueError, match="before any update"):
        Evaluator().result()
