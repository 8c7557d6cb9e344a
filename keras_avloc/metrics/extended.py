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

`extended_table` is the whole table SLAVC's `EvaluatorFull.finalize_stats` computes: every metric at cIoU 0.5
and 0.75 on the subsets all / visible / small / medium / large / huge (ground-truth area in pixels of the 224
grid: [0, 32²), [32², 96²), [96², 144²), [144², 10000²), samples with objects only). Two choices of the official
code are kept and named here: the AUC of every subset, "all" included, is over the samples with objects (and does
not depend on the cIoU threshold), and an empty subset gives no value (None here, NaN there). The official code prints F1 at each threshold and
leaves the maximum to the reader; the table reports the maximum, and "LocAcc" (the published "Precision" of
stoneMo/SLAVC's README) is Precision-visible@50.
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


SUBSET_AREAS = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, 144.0**2),
                "huge": (144.0**2, 10000.0**2)}
"""Ground-truth area bounds [min, max) in pixels of the 224x224 grid (stoneMo/SLAVC `utils.py`, `EvaluatorFull`)."""


def extended_table(cious, confidences, has_object, areas, ciou_thresholds=(0.5, 0.75)):
    """SLAVC's full extended-protocol table (`EvaluatorFull.finalize_stats`), keyed as the official code prints it.

    Args:
        cious: [N] cIoU per sample (ignored where `has_object` is False).
        confidences: [N] `top_quarter_confidence` of each map.
        has_object: [N] bool, False for the non-sounding pairs.
        areas: [N] ground-truth area per sample (the sum of its 224x224 ground-truth map; 0 without object).
        ciou_thresholds: cIoU thresholds (official: 0.5 and 0.75).

    Returns:
        dict `{"<Metric>-<subset>@<T>": float}` for Metric in Precision, AP, F1 (the maximum over the official
        thresholds) and AUC, subset in all, visible, small, medium, large, huge and T = 100 x the threshold; None for
        an empty subset (the official code: NaN; None keeps the table valid JSON and comparable). Also "LocAcc" (= Precision-visible@50 when 0.5 is among the thresholds).

    Example:
    >>> table = extended_table([0.8, 0.1, 0.0], [0.9, 0.5, 0.7], [True, True, False], [900.0, 5000.0, 0.0])
    >>> round(table["AP-all@50"], 3), table["LocAcc"]
    (0.25, 0.5)
    """
    ciou_values = _as_float_array(cious, "cious", ndim=1)
    conf = _as_float_array(confidences, "confidences", ndim=1)
    obj = np.asarray(has_object, dtype=bool)
    area = _as_float_array(areas, "areas", ndim=1)
    if not len(ciou_values) == len(conf) == len(obj) == len(area):
        raise ValueError(f"extended_table: cious, confidences, has_object and areas differ in length "
                         f"({len(ciou_values)}, {len(conf)}, {len(obj)}, {len(area)}).")
    subsets = {"all": np.ones(len(obj), dtype=bool), "visible": obj}
    for name, (low, high) in SUBSET_AREAS.items():
        subsets[name] = obj & (area >= low) & (area < high)
    table = {}
    for threshold in ciou_thresholds:
        tag = int(round(threshold * 100))
        for name, keep in subsets.items():
            if not keep.any():
                for metric in ("Precision", "AP", "F1", "AUC"):
                    table[f"{metric}-{name}@{tag}"] = None
                continue
            args = (ciou_values[keep], conf[keep], obj[keep])
            table[f"Precision-{name}@{tag}"] = float(precision_recall(*args, [-1000.0], threshold)[0][0])
            table[f"AP-{name}@{tag}"] = extended_ap(*args, threshold)
            table[f"F1-{name}@{tag}"] = float(extended_f1(*args, threshold)[1].max())
            visible = ciou_values[keep & obj]
            table[f"AUC-{name}@{tag}"] = success_curve_area(visible) if visible.size else None
    if "Precision-visible@50" in table:
        table["LocAcc"] = table["Precision-visible@50"]
    return table


SLAVC_OBJECTNESS_MAX = 2.5
"""SLAVC `test.py`: the object-saliency map is scaled by 1 / 2.5 (its fixed range [0, 2.5]) before the fusion."""


def saliency_fusion(cosine_maps, objectness_maps, alpha=0.9):
    """SLAVC's AV+OGL map: `alpha * (cosine + 1) / 2 + (1 - alpha) * objectness / 2.5`, both on fixed scales.

    Args:
        cosine_maps: [N, H, W] audio-visual cosine maps (what `localize` returns).
        objectness_maps: [N, H, W] mean |layer4 feature| of an ImageNet ResNet-18, upsampled like the maps.
        alpha: weight of the audio-visual map (SLAVC's README and published numbers: 0.9; its argparse default 0.4).

    Returns:
        float32 [N, H, W]; no normalisation, so the confidence (top-quarter mean) stays comparable across samples.
    """
    cosine = _as_float_array(cosine_maps, "cosine_maps", ndim=3, dtype=np.float32)
    objectness = _as_float_array(objectness_maps, "objectness_maps", ndim=3, dtype=np.float32)
    if cosine.shape != objectness.shape:
        raise ValueError(f"saliency_fusion: maps {cosine.shape} and objectness {objectness.shape} differ in shape.")
    return (alpha * (cosine + 1.0) / 2.0 + (1.0 - alpha) * objectness / SLAVC_OBJECTNESS_MAX).astype(np.float32)
