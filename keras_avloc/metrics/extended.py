"""SLAVC's extended protocol: localisation with silent and off-screen samples.

Semantics follow stoneMo/SLAVC `utils.EvaluatorFull` and `test.py`:

* confidence of a map = mean of its top 25% scores, `np.sort(s.ravel())[-n // 4:].mean()` (Python's
  `-n // 4` keeps ceil(n/4) values). Scores must be on a fixed scale shared by all samples (SLAVC maps
  cosine similarity s/τ from [-1/τ, 1/τ] to [0, 1]); per-image min-max normalisation would erase it.
* a sample "has an object" when it has at least one ground-truth box (silent / off-screen: none).
* at a confidence threshold c: a sample with an object and confidence >= c is a true positive when its
  cIoU >= the cIoU threshold, else a false positive; with confidence < c a false negative; a sample
  without an object and confidence >= c is a false positive. Precision (recall) is 1 when its
  denominator is 0.
* AP: thresholds are `np.sort(conf)[:-1][::-skip]` with skip = max(1, N // 200) (every skip-th value,
  descending, without the maximum); precision is made monotone from the high-recall end
  (`max(precision[i:])`, VOC style) and AP = Σ_i p_max[i] · (recall[i+1] − recall[i]).
* max-F1: the best F1 over the thresholds `sorted(conf)[::max(1, N // 10)]` (the list SLAVC prints).
* Precision: precision with every sample detected (threshold −1000).
* AUC and cIoU@t are computed on samples with objects only.
"""

import numpy as np

from keras_avloc.metrics.localization import _as_float_array, success_curve_area


def top_quarter_confidence(heatmaps):
    """Confidence per map: the mean of its top 25% values (SLAVC).

    Args:
        heatmaps: [N, H, W] on a fixed score scale.

    Returns:
        float64 array [N].
    """
    maps = _as_float_array(heatmaps, "heatmaps", dtype=np.float32)
    flat = maps.reshape(len(maps), -1)
    count = flat.shape[1]
    keep = -(-count // 4)  # len(sorted[-n // 4:]) == ceil(n / 4)
    top = np.partition(flat, count - keep, axis=1)[:, count - keep :]
    return top.mean(axis=1, dtype=np.float64)


def precision_recall(cious, confidences, has_object, confidence_thresholds, ciou_threshold=0.5):
    """Precision and recall (SLAVC definitions) at each confidence threshold.

    Args:
        cious: [N] cIoU per sample (ignored where `has_object` is False).
        confidences: [N].
        has_object: [N] bool, False for silent / off-screen samples.
        confidence_thresholds: [T].
        ciou_threshold: cIoU needed for a correct localisation.

    Returns:
        (precision [T], recall [T]) float64 arrays.
    """
    ciou_values = np.asarray(cious, dtype=np.float64)
    conf = _as_float_array(confidences, "confidences", ndim=1)
    obj = np.asarray(has_object, dtype=bool)
    detected = conf[None, :] >= np.asarray(confidence_thresholds, dtype=np.float64).reshape(-1, 1)
    correct = obj & (ciou_values >= ciou_threshold)
    true_pos = np.sum(detected & correct, axis=1)
    false_pos = np.sum(detected & ~correct, axis=1)
    false_neg = np.sum(~detected & obj, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(true_pos + false_pos == 0, 1.0, true_pos / np.maximum(true_pos + false_pos, 1))
        recall = np.where(true_pos + false_neg == 0, 1.0, true_pos / np.maximum(true_pos + false_neg, 1))
    return precision.astype(np.float64), recall.astype(np.float64)


def extended_ap(cious, confidences, has_object, ciou_threshold=0.5):
    """SLAVC's AP over confidence thresholds (VOC-style monotone precision); see the module docstring."""
    conf = _as_float_array(confidences, "confidences", ndim=1)
    skip = max(1, len(conf) // 200)
    thresholds = np.sort(conf)[:-1][::-skip]
    if len(thresholds) < 2:
        return 0.0
    precision, recall = precision_recall(cious, conf, has_object, thresholds, ciou_threshold)
    precision_max = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(precision_max[:-1] * np.diff(recall)))


def extended_f1(cious, confidences, has_object, ciou_threshold=0.5):
    """F1 at SLAVC's ten-ish confidence thresholds `sorted(conf)[::max(1, N // 10)]`.

    Returns:
        (thresholds [T], f1 [T]); the published max-F1 is `f1.max()`.
    """
    conf = _as_float_array(confidences, "confidences", ndim=1)
    thresholds = np.sort(conf)[:: max(1, len(conf) // 10)]
    precision, recall = precision_recall(cious, conf, has_object, thresholds, ciou_threshold)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return thresholds, f1


def extended_metrics(cious, confidences, has_object, ciou_thresholds=(0.3, 0.5)):
    """All SLAVC extended-protocol numbers in one dict.

    Args:
        cious: [N]; confidences: [N]; has_object: [N] bool.
        ciou_thresholds: cIoU thresholds to report (SLAVC: 0.5 and 0.75; AVGN adds 0.3).

    Returns:
        dict with "precision@T", "ap@T", "max_f1@T" for each threshold T (as percent-free fractions),
        plus "auc_visible" and "num_with_object" / "num_without_object".
    """
    ciou_values = np.asarray(cious, dtype=np.float64)
    obj = np.asarray(has_object, dtype=bool)
    result = {"num_with_object": int(obj.sum()), "num_without_object": int((~obj).sum())}
    for threshold in ciou_thresholds:
        tag = f"{int(round(threshold * 100))}"
        precision, _ = precision_recall(ciou_values, confidences, obj, [-1000.0], threshold)
        result[f"precision@{tag}"] = float(precision[0])
        result[f"ap@{tag}"] = extended_ap(ciou_values, confidences, obj, threshold)
        result[f"max_f1@{tag}"] = float(extended_f1(ciou_values, confidences, obj, threshold)[1].max())
    if obj.any():
        result["auc_visible"] = success_curve_area(ciou_values[obj])
    return result
