"""The ground-truth oracle is the ceiling of median-binarised cIoU (checked against the closed form)."""

import numpy as np
import pytest

from keras_avloc.metrics import Evaluator
from keras_avloc.metrics.baselines import center_prior, ground_truth_oracle, random_maps


def median_ciou(heatmap, gt):
    """Independent reference: binarise at the median with >=, then |P n G| / (|G| + |P \\ G|)."""
    predicted = heatmap >= np.median(heatmap)
    return np.sum(predicted & gt) / (np.sum(gt) + np.sum(predicted & ~gt))


@pytest.mark.parametrize("side", [20, 60, 150, 200])
def test_oracle_reaches_the_closed_form_ceiling_of_a_box(side):
    gt = np.zeros((224, 224), bool)
    gt[10:10 + side, 30:30 + side] = True
    area = gt.mean()
    # The median keeps half of the image; `>=` keeps a larger object whole (its pixels tie).
    expected = 2 * area if area <= 0.5 else 1.0
    oracle = ground_truth_oracle(gt[None].astype(np.float32))[0]
    assert median_ciou(oracle, gt) == pytest.approx(expected, rel=1e-9)
    for other in (center_prior(1)[0], random_maps(1, seed=side)[0]):
        assert median_ciou(other, gt) <= median_ciou(oracle, gt) + 1e-12


def test_oracle_scores_at_least_as_well_as_any_map_through_the_evaluator():
    rng = np.random.default_rng(0)
    gts = np.zeros((6, 224, 224), np.float32)
    for gt in gts:
        x, y = rng.integers(0, 74, size=2)
        gt[y:y + rng.integers(40, 150), x:x + rng.integers(40, 150)] = 1
    results = {}
    for name, maps in (("oracle", ground_truth_oracle(gts)), ("centre", center_prior(6)), ("random", random_maps(6))):
        evaluator = Evaluator("vggss")
        evaluator.update(maps, gts)
        results[name] = evaluator.result()
    assert results["oracle"]["pointing_game"] == 1.0
    assert results["oracle"]["mean_ciou"] > max(results["centre"]["mean_ciou"], results["random"]["mean_ciou"])
    assert results["oracle"]["auc"] >= max(results["centre"]["auc"], results["random"]["auc"])
    expected = np.mean([median_ciou(ground_truth_oracle(g[None])[0], g > 0) for g in gts])
    assert results["oracle"]["mean_ciou"] == pytest.approx(expected, abs=1e-6)
