"""Multi-source localisation metrics: AVGN's CAP / PIAP and per-source cIoU, and CSOL's class maps.

AVGN (stoneMo/AVGN `utils.EvaluatorFull.update`) scores a map pixel-wise with
`average_precision_score(binary_prediction, gt_map)`, i.e. the thresholded *prediction* as y_true and
the *ground truth* as y_score. That swaps the arguments: the result measures how well the ground truth
ranks the predicted pixels and ignores the heatmap's own ranking. Here AP always uses the ground truth
(G > 0.5) as y_true and the continuous heatmap as y_score, as the AVGN paper describes, so numbers are
not identical to the official script's PIAP.

* PIAP (permutation-invariant AP) of a mixture with K sources: max over permutations π of
  mean_k AP(G_k, S_π(k)); averaged over mixtures.
* CAP (class-aware AP): for each class c, AP over the pooled pixels of all samples of S_c (the map for
  class c) against G_c (zero where c is not sounding); averaged over classes with at least one positive
  pixel.
* Per-source cIoU: cIoU of each source's map with that source's ground truth (maps in the order of the
  sources), summarised as cIoU@0.3 and the success AUC.
"""

import itertools

import numpy as np

from keras_avloc.metrics.localization import _as_float_array, ciou, success_curve_area
from keras_avloc.metrics.ranking import average_precision


def permutation_invariant_ap(source_maps, source_gts):
    """PIAP: best-permutation mean pixel AP per mixture, averaged over mixtures.

    Args:
        source_maps: [N, K, H, W] predicted map per source slot.
        source_gts: [N, K, H, W] ground truth per source (same resolution).

    Returns:
        (piap float, per-sample [N] array).
    """
    maps = _as_float_array(source_maps, "source_maps", ndim=4)
    gts = _as_float_array(source_gts, "source_gts", ndim=4)
    if maps.shape != gts.shape:
        raise ValueError(f"source_maps {maps.shape} and source_gts {gts.shape} differ; resize the maps first.")
    count, sources = maps.shape[:2]
    per_sample = np.zeros(count)
    for n in range(count):
        pair_ap = np.array(
            [[average_precision(gts[n, k], maps[n, j]) for j in range(sources)] for k in range(sources)]
        )
        per_sample[n] = max(
            np.mean(pair_ap[np.arange(sources), list(perm)]) for perm in itertools.permutations(range(sources))
        )
    return float(per_sample.mean()) if count else float("nan"), per_sample


def class_aware_ap(class_maps, class_gts):
    """CAP: per-class pixel AP pooled over samples, averaged over classes that occur.

    Args:
        class_maps: [N, C, H, W] map per class.
        class_gts: [N, C, H, W] ground truth per class (all zero where the class is silent).

    Returns:
        (cap float, per-class [C] array with NaN for classes without positives).
    """
    maps = _as_float_array(class_maps, "class_maps", ndim=4)
    gts = _as_float_array(class_gts, "class_gts", ndim=4)
    if maps.shape != gts.shape:
        raise ValueError(f"class_maps {maps.shape} and class_gts {gts.shape} differ; resize the maps first.")
    per_class = np.full(maps.shape[1], np.nan)
    for c in range(maps.shape[1]):
        if np.any(gts[:, c] > 0.5):
            per_class[c] = average_precision(gts[:, c], maps[:, c])
    valid = ~np.isnan(per_class)
    return (float(per_class[valid].mean()) if valid.any() else float("nan")), per_class


def per_source_ciou(source_maps, source_gts, threshold=0.3, **ciou_kwargs):
    """cIoU of every source's map with its own ground truth, and the summary numbers.

    Args:
        source_maps: [N, K, h, w]; source_gts: [N, K, S, S].
        threshold: the success threshold reported (AVGN uses 0.3).

    Returns:
        dict {"ciou@0.3": ..., "auc": ..., "mean_ciou": ..., "cious": [N, K] array}.
    """
    maps = _as_float_array(source_maps, "source_maps", ndim=4)
    gts = _as_float_array(source_gts, "source_gts", ndim=4)
    count, sources = maps.shape[:2]
    values = ciou(maps.reshape(count * sources, *maps.shape[2:]), gts.reshape(count * sources, *gts.shape[2:]), **ciou_kwargs)
    return {
        f"ciou@{threshold:g}": float(np.mean(values >= threshold)),
        "auc": success_curve_area(values),
        "mean_ciou": float(values.mean()),
        "cious": values.reshape(count, sources),
    }


def ratio_ciou(maps, gts, ratio=0.5):
    """CSOL's cIoU of maps binarised at `ratio` times their own maximum (`eval.py`: 0.5, `eval_duet.py`: 0.2).

    P = S > ratio · max(S); cIoU = Σ(P·G) / (ΣG + Σ(P·[G==0])) (0 where the denominator is 0).

    Args:
        maps: [..., H, W] maps; gts: [..., H, W] 0/1 ground truth of the same shape.

    Returns:
        float64 array of the leading shape.
    """
    maps = np.asarray(maps, dtype=np.float64)
    gts = np.asarray(gts, dtype=np.float64)
    if maps.shape != gts.shape or maps.ndim < 2:
        raise ValueError(f"ratio_ciou: maps {maps.shape} and gts {gts.shape} must have one shape [..., H, W].")
    peak = maps.max(axis=(-2, -1), keepdims=True)
    pred = (maps > ratio * peak).astype(np.float64)
    inter = np.sum(pred * gts, axis=(-2, -1))
    denom = np.sum(gts, axis=(-2, -1)) + np.sum(pred * (gts == 0), axis=(-2, -1))
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


def match_clusters(confusion, rule="hungarian"):
    """Cluster -> class assignment maximising the summed confusion.

    Args:
        confusion: [C, K]: fraction of class c's labelled samples that fall in cluster k.
        rule: "hungarian": one-to-one (`scipy.optimize.linear_sum_assignment`; with K > C some clusters stay
            unassigned, with K < C some classes get none); "many-to-one": the official `match_cluster.py`
            objective, every cluster assigned to one class and every class at least one cluster (needs
            K >= C), solved exactly (the official code draws 10^6 random assignments).

    Returns:
        int [C, K] 0/1 matrix: entry (c, k) = 1 when cluster k's map counts as class c's.
    """
    from scipy.optimize import linear_sum_assignment

    confusion = np.asarray(confusion, dtype=np.float64)
    classes, clusters = confusion.shape
    assignment = np.zeros([classes, clusters], np.int64)
    if rule == "hungarian":
        rows, cols = linear_sum_assignment(-confusion)
        assignment[rows, cols] = 1
        return assignment
    if rule != "many-to-one":
        raise ValueError(f"match_clusters: rule must be 'hungarian' or 'many-to-one', got {rule!r}.")
    if clusters < classes:
        raise ValueError(f"many-to-one needs at least as many clusters as classes ({clusters} < {classes}).")
    # Each class needs one representative cluster; every other cluster goes to its best class. As an
    # assignment: columns = C class slots + (K - C) free slots worth each cluster's best class value.
    best = confusion.max(axis=0)
    value = np.concatenate([confusion.T, np.repeat(best[:, None], clusters - classes, axis=1)], axis=1)
    rows, cols = linear_sum_assignment(-value)
    for cluster, column in zip(rows, cols):
        assignment[column if column < classes else int(np.argmax(confusion[:, cluster])), cluster] = 1
    return assignment


def csol_class_ciou(class_maps, class_gts, sounding, ratio=0.5):
    """CSOL class-wise cIoU: each sounding class's map binarised at `ratio` · its maximum (`ratio_ciou`),
    averaged per class over the samples where c sounds, then over classes.

    Args:
        class_maps: [N, C, H, W] non-negative maps; class_gts: [N, C, H, W]; sounding: [N, C] bool;
        ratio: 0.5 (synthetic mosaics, `eval.py`) or 0.2 (duets, `eval_duet.py`).

    Returns:
        (mean over classes float, per-class [C] array with NaN for classes that never sound).
    """
    maps = _as_float_array(class_maps, "class_maps", ndim=4)
    gts = _as_float_array(class_gts, "class_gts", ndim=4)
    mask = np.asarray(sounding, dtype=bool)
    values = ratio_ciou(maps, gts, ratio)
    per_class = np.full(maps.shape[1], np.nan)
    for c in range(maps.shape[1]):
        if mask[:, c].any():
            per_class[c] = values[mask[:, c], c].mean()
    valid = ~np.isnan(per_class)
    return (float(per_class[valid].mean()) if valid.any() else float("nan")), per_class


def no_sound_area(class_maps, silent, low=0.2):
    """CSOL NSA: mean fraction of pixels <= `low` in the maps of silent classes (maps in [0, 1]).

    Args:
        class_maps: [N, C, H, W] in [0, 1]; silent: [N, C] bool (class c is silent in sample n).

    Returns:
        float NSA (NaN when nothing is silent); higher is better.
    """
    maps = _as_float_array(class_maps, "class_maps", ndim=4)
    mask = np.asarray(silent, dtype=bool)
    if not mask.any():
        return float("nan")
    fractions = np.mean(maps <= low, axis=(2, 3))
    return float(fractions[mask].mean())
