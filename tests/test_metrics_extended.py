"""AP-style metrics (SLAVC extended, AVGN CAP/PIAP, CSOL, DenseAV), retrieval and baselines."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from keras_avloc.metrics import (
    Evaluator,
    average_precision,
    baselines,
    box_gt_map,
    class_aware_ap,
    csol_class_ciou,
    extended_metrics,
    no_sound_area,
    per_source_ciou,
    permutation_invariant_ap,
    prompted_segmentation_map,
    prompted_segmentation_miou,
    retrieval_recall,
    top_quarter_confidence,
)
from keras_avloc.metrics.extended import extended_ap, extended_f1
from slavc_reference import reference_ap, reference_pr, reference_table_entry, reference_vggss_area


# ---- average precision ---------------------------------------------------------------------------
def test_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for trial in range(5):
        truth = rng.random(400) > 0.6
        score = np.round(rng.random(400), 1 + trial % 2)  # coarse rounding creates many ties
        assert average_precision(truth, score) == pytest.approx(average_precision_score(truth, score), abs=1e-12)
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8333333333333333)
    assert average_precision([0, 0], [0.3, 0.2]) == 0.0
    with pytest.raises(ValueError):
        average_precision([1, 0], [np.nan, 0.1])


def test_retrieval_recall_hand_cases():
    identity = np.eye(12)
    result = retrieval_recall(identity)
    assert result["a_to_b@1"] == 1.0 and result["b_to_a@10"] == 1.0
    # Row 0 ranks its match third (0.1 < 0.5 < 1.5); column 2 ranks its match second (1.0 < 1.5).
    sim = np.eye(3)
    sim[0] = [0.1, 0.5, 1.5]
    result = retrieval_recall(sim, ks=(1, 2, 3))
    assert result["a_to_b@1"] == pytest.approx(2 / 3) and result["a_to_b@2"] == pytest.approx(2 / 3)
    assert result["a_to_b@3"] == 1.0
    assert result["b_to_a@1"] == pytest.approx(2 / 3) and result["b_to_a@2"] == 1.0
    with pytest.raises(ValueError):
        retrieval_recall(np.zeros((2, 3)))


# ---- SLAVC extended protocol: reference written as the published loops ---------------------------
@pytest.mark.parametrize("count", [37, 450])
def test_extended_protocol_matches_reference_loops(count):
    rng = np.random.default_rng(count)
    has_object = rng.random(count) > 0.3
    cious = rng.random(count)
    confidences = rng.random(count) + 0.3 * has_object
    max_f1 = {}
    for ciou_thr in (0.3, 0.5):
        assert extended_ap(cious, confidences, has_object, ciou_thr) == pytest.approx(
            reference_ap(has_object, cious, confidences, ciou_thr), abs=1e-12
        )
        thresholds, f1 = extended_f1(cious, confidences, has_object, ciou_thr)
        expected = []
        for thr in list(sorted(confidences))[:: max(1, count // 10)]:
            p, r = reference_pr(has_object, cious, confidences, thr, ciou_thr)
            expected.append(2 * r * p / (r + p) if r + p > 0 else 0.0)
        np.testing.assert_allclose(f1, expected, atol=1e-12)
        max_f1[ciou_thr] = max(expected)
    result = extended_metrics(cious, confidences, has_object, ciou_thresholds=(0.3, 0.5))
    for ciou_thr, tag in ((0.3, "30"), (0.5, "50")):
        precision = reference_pr(has_object, cious, confidences, -1000, ciou_thr)[0]
        assert result[f"precision@{tag}"] == pytest.approx(precision)
        assert result[f"max_f1@{tag}"] == pytest.approx(max_f1[ciou_thr])
        assert result[f"ap@{tag}"] == pytest.approx(reference_ap(has_object, cious, confidences, ciou_thr))


def test_extended_hand_case():
    # Two visible samples (one well localised), one silent sample with high confidence.
    has_object = [True, True, False]
    cious = [0.8, 0.1, 0.0]
    confidences = [0.9, 0.5, 0.7]
    result = extended_metrics(cious, confidences, has_object, ciou_thresholds=(0.5,))
    assert result["precision@50"] == pytest.approx(1 / 3)  # all detected: 1 TP, 2 FP
    # F1 grid = all three confidences. At 0.5: TP 1, FP 2, FN 0 -> p 1/3, r 1, F1 0.5.
    # At 0.7: TP 1, FP 1 (silent), FN 1 -> F1 0.5. At 0.9: TP 1, FP 0, FN 1 -> p 1, r 1/2, F1 2/3.
    assert result["max_f1@50"] == pytest.approx(2 / 3)
    # AP thresholds (descending, without the max): [0.7, 0.5] -> recalls [1/2, 1], monotone precision
    # [1/2, 1/3] -> AP = 1/2 * (1 - 1/2) = 0.25.
    assert result["ap@50"] == pytest.approx(0.25)


def test_top_quarter_confidence():
    maps = np.arange(2 * 16, dtype=np.float32).reshape(2, 4, 4)
    np.testing.assert_allclose(top_quarter_confidence(maps), [np.mean([12, 13, 14, 15]), np.mean([28, 29, 30, 31])])
    odd = np.arange(10, dtype=np.float32).reshape(1, 2, 5)  # -10 // 4 = -3 -> top 3 values
    assert top_quarter_confidence(odd)[0] == pytest.approx(np.sort(odd.ravel())[-10 // 4 :].mean())


# ---- multi-source (AVGN) -------------------------------------------------------------------------
def test_piap_is_permutation_invariant_and_matches_sklearn():
    rng = np.random.default_rng(5)
    gts = np.zeros((3, 2, 16, 16))
    gts[:, 0, :8, :8] = 1
    gts[:, 1, 8:, 8:] = 1
    maps = rng.random((3, 2, 16, 16))
    piap, per_sample = permutation_invariant_ap(maps, gts)
    for n in range(3):
        best = max(
            np.mean([average_precision_score(gts[n, k].ravel() > 0.5, maps[n, perm[k]].ravel()) for k in range(2)])
            for perm in itertools.permutations(range(2))
        )
        assert per_sample[n] == pytest.approx(best, abs=1e-12)
    assert piap == pytest.approx(per_sample.mean())
    perfect, _ = permutation_invariant_ap(gts[:, ::-1] + 0.0, gts)  # swapped slots still score 1
    assert perfect == pytest.approx(1.0)


def test_cap_matches_pooled_sklearn_ap():
    rng = np.random.default_rng(6)
    gts = (rng.random((4, 3, 8, 8)) > 0.7).astype(float)
    gts[:, 2] = 0  # class 2 never sounds: excluded from the mean
    maps = rng.random((4, 3, 8, 8))
    cap, per_class = class_aware_ap(maps, gts)
    expected = [average_precision_score(gts[:, c].ravel(), maps[:, c].ravel()) for c in range(2)]
    np.testing.assert_allclose(per_class[:2], expected, atol=1e-12)
    assert np.isnan(per_class[2]) and cap == pytest.approx(np.mean(expected))


def test_per_source_ciou_summary():
    gts = np.zeros((2, 2, 224, 224), dtype=np.float32)
    gts[:, 0] = box_gt_map([[0, 0, 0.5, 1]])
    gts[:, 1] = box_gt_map([[0.5, 0, 1, 1]])
    maps = gts.copy()
    maps[1, 1] = 1 - gts[1, 1]  # wrong half: cIoU 0
    stats = per_source_ciou(maps, gts)
    np.testing.assert_allclose(stats["cious"], [[1, 1], [1, 0]])
    assert stats["ciou@0.3"] == 0.75 and stats["mean_ciou"] == 0.75


# ---- CSOL ----------------------------------------------------------------------------------------
def test_csol_class_ciou_and_nsa_hand_cases():
    maps = np.zeros((1, 2, 4, 4))
    maps[0, 0, :, :2] = 1.0
    maps[0, 0, :, 2] = 0.4  # below 0.5 * max -> not predicted
    gts = np.zeros((1, 2, 4, 4))
    gts[0, 0, :, :1] = 1  # 4 pixels; prediction 8 pixels -> 4 / (4 + 4)
    mean, per_class = csol_class_ciou(maps, gts, sounding=[[True, False]])
    assert per_class[0] == pytest.approx(0.5) and np.isnan(per_class[1]) and mean == pytest.approx(0.5)
    silent_maps = np.zeros((1, 2, 4, 4))
    silent_maps[0, 1].flat[:4] = 0.9  # 12 of 16 pixels <= 0.2
    assert no_sound_area(silent_maps, silent=[[False, True]]) == pytest.approx(12 / 16)
    assert np.isnan(no_sound_area(silent_maps, silent=[[False, False]]))


# ---- DenseAV -------------------------------------------------------------------------------------
def test_denseav_segmentation_metrics():
    rng = np.random.default_rng(7)
    masks = (rng.random((6, 8, 8)) > 0.5).astype(float)
    heat = rng.random((6, 8, 8))
    ids = np.array([0, 0, 1, 1, 2, 2])
    value, per_class = prompted_segmentation_map(heat, masks, ids)
    for c in range(3):
        assert per_class[c] == pytest.approx(average_precision_score(masks[ids == c].ravel(), heat[ids == c].ravel()))
    assert value == pytest.approx(np.mean(list(per_class.values())))
    miou, per_class_iou = prompted_segmentation_miou(masks * 3.0 + 1.0, masks, ids)
    assert miou == pytest.approx(1.0) and set(per_class_iou) == {0, 1, 2}
    # against the official `multi_iou` written out in numpy: per class, thresholds linspace(min, max, 20) of
    # that class's pooled values, strict `>`, an empty union counting as 0, the best over thresholds
    miou, per_class_iou = prompted_segmentation_miou(heat, masks, ids)
    for c in range(3):
        values, truth = heat[ids == c].ravel(), masks[ids == c].ravel() > 0.5
        thresholds = np.linspace(values.min(), values.max(), 20)
        hard = values[None, :] > thresholds[:, None]
        inter = np.logical_and(hard, truth[None]).sum(axis=1)
        union = np.logical_or(hard, truth[None]).sum(axis=1)
        assert per_class_iou[c] == pytest.approx(np.max(inter / np.where(union == 0, 1, union)))
    assert miou == pytest.approx(np.mean([per_class_iou[c] for c in range(3)]))


# ---- baselines -----------------------------------------------------------------------------------
def test_baselines_shapes_seeding_and_objectness():
    from keras_avloc.evaluation.report import _objectness

    center = baselines.center_prior(3, size=32)
    assert center.shape == (3, 32, 32)
    assert np.unravel_index(center[0].argmax(), (32, 32)) in {(15, 15), (15, 16), (16, 15), (16, 16)}
    np.testing.assert_array_equal(baselines.random_maps(2, 16, seed=3), baselines.random_maps(2, 16, seed=3))
    assert not np.array_equal(baselines.random_maps(2, 16, seed=3), baselines.random_maps(2, 16, seed=4))

    def fake_encoder(images, training=False):
        features = np.zeros((len(images), 2, 2, 4), np.float32)
        features[:, 0, 1] = [-3.0, 3.0, 3.0, -3.0]  # top-right cell is "object"
        return features

    maps = _objectness(fake_encoder, np.zeros((2, 64, 64, 3)))
    assert maps.shape == (2, 224, 224) and maps[0, 0, 223] == pytest.approx(3.0) and maps[0, 223, 0] == 0.0


def test_evaluator_multi_source_and_masks():
    gts = np.zeros((2, 2, 32, 32), dtype=np.float32)
    gts[:, 0, :, :16] = 1
    gts[:, 1, :, 16:] = 1
    union = gts.max(axis=1)
    evaluator = Evaluator("stamps-mix")
    evaluator.update(
        union[:, ::4, ::4],
        union,
        masks=[union[0], None],
        kinds=["mixture", "mixture"],
        source_heatmaps=gts[:, ::-1],
        source_gt_maps=gts,
    )
    result = evaluator.result()
    assert result["multi_source"]["piap"] == pytest.approx(1.0)
    assert result["multi_source"]["ciou@0.3"] == 0.0  # slots are swapped: per-source cIoU is order-aware
    assert result["mask_iou"] == pytest.approx(1.0)


# ---- SLAVC's full table on the real Extended VGG-SS lists ------------------------------------------
from shared_data import SHARED, shared_path  # noqa: E402

REAL = SHARED / "annotations"


def test_extended_table_matches_the_published_loops_on_the_real_extended_vggss_lists():
    import csv
    import json

    from keras_avloc.metrics.extended import extended_table

    shared_path("annotations")
    boxes = {entry["file"]: entry["bbox"] for entry in json.loads((REAL / "vggss.json").read_text())}
    with open(REAL / "extended_vggss" / "vggss_test_plus_silent.csv", newline="") as handle:
        silent = [row for row in csv.DictReader(handle) if row["label"] == "non-sounding"]
    assert len(silent) == 5158
    positives = sorted(boxes)[:400]
    has_object = [True] * len(positives) + [False] * 400
    areas = [reference_vggss_area(boxes[name]) for name in positives] + [0.0] * 400
    assert {"small", "medium", "large", "huge"} <= {  # the real boxes fill every size subset
        name for area in areas[:400] for name, (low, high) in
        {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 144**2), "huge": (144**2, 1e8)}.items()
        if low <= area < high}
    rng = np.random.default_rng(7)
    cious = np.concatenate([rng.beta(2, 2, 400), np.zeros(400)])
    confidences = rng.random(800) + 0.2 * np.asarray(has_object)
    table = extended_table(cious, confidences, has_object, areas)
    bounds = {"all": None, "visible": None, "small": (0, 32**2), "medium": (32**2, 96**2),
              "large": (96**2, 144**2), "huge": (144**2, 10000**2)}
    for ciou_thr, tag in ((0.5, 50), (0.75, 75)):
        for name, bound in bounds.items():
            if name == "all":
                keep = [True] * 800
            elif name == "visible":
                keep = has_object
            else:
                keep = [o and bound[0] <= a < bound[1] for o, a in zip(has_object, areas)]
            expected = reference_table_entry(has_object, cious, confidences, keep, ciou_thr)
            got = [table[f"{metric}-{name}@{tag}"] for metric in ("Precision", "AP", "F1", "AUC")]
            if expected[0] is None:
                assert got == expected, f"{name}@{tag}"
                continue
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=f"{name}@{tag}")
    assert table["LocAcc"] == table["Precision-visible@50"] == pytest.approx(np.mean(cious[:400] >= 0.5))
    assert table["AUC-all@50"] == table["AUC-visible@75"]  # the official AUC ignores the silent pairs and the threshold


def test_extended_table_empty_subsets_are_nan_and_lengths_must_agree():
    from keras_avloc.metrics.extended import extended_table

    table = extended_table([0.6, 0.2], [0.9, 0.4], [True, False], [50.0**2, 0.0])
    assert table["AP-small@50"] is None and table["F1-huge@75"] is None
    assert table["Precision-medium@50"] == 1.0 and table["Precision-all@50"] == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        extended_table([0.6], [0.9, 0.4], [True, False], [1.0, 0.0])
