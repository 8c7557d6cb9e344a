"""DenseAV-style evaluation: prompted semantic segmentation (mAP, mIoU) and cross-modal retrieval.

* mAP: for each prompt class, the pixel AP of the heatmaps of all samples prompted with that class
  (pixels pooled) against their masks; averaged over classes.
* mIoU: heatmaps are min-max normalised over the *whole* evaluation set (one min and max), binarised at
  each of 20 thresholds `np.linspace(0, 1, 20)`; per class IoU = Σ|P∩M| / Σ|P∪M| over its samples; the
  reported mIoU is the best mean-over-classes IoU over the thresholds.
* Retrieval recall@1/5/10 in both directions: `keras_avloc.metrics.ranking.retrieval_recall`.
"""

import numpy as np

from keras_avloc.metrics.localization import _as_float_array
from keras_avloc.metrics.ranking import average_precision, retrieval_recall  # noqa: F401 (re-export)


def prompted_segmentation_map(heatmaps, masks, class_ids):
    """Mean over prompt classes of the pooled pixel AP.

    Args:
        heatmaps: [N, H, W]; masks: [N, H, W] (> 0.5 = object); class_ids: [N] prompt class per sample.

    Returns:
        (map float, dict class_id -> AP).
    """
    maps = _as_float_array(heatmaps, "heatmaps", ndim=3)
    gts = _as_float_array(masks, "masks", ndim=3)
    ids = np.asarray(class_ids)
    per_class = {}
    for c in np.unique(ids):
        select = ids == c
        if np.any(gts[select] > 0.5):
            per_class[c.item()] = average_precision(gts[select], maps[select])
    value = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return value, per_class


def prompted_segmentation_miou(heatmaps, masks, class_ids, num_thresholds=20):
    """Best-threshold mIoU with heatmaps normalised over the whole evaluation set.

    Returns:
        (miou float, best threshold float).
    """
    maps = _as_float_array(heatmaps, "heatmaps", ndim=3)
    gts = _as_float_array(masks, "masks", ndim=3) > 0.5
    ids = np.asarray(class_ids)
    low, high = maps.min(), maps.max()
    normalized = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    classes = np.unique(ids)
    best = (-1.0, 0.0)
    for threshold in np.linspace(0.0, 1.0, num_thresholds):
        pred = normalized >= threshold
        ious = []
        for c in classes:
            select = ids == c
            inter = np.sum(pred[select] & gts[select])
            union = np.sum(pred[select] | gts[select])
            ious.append(inter / union if union else 0.0)
        value = float(np.mean(ious))
        if value > best[0]:
            best = (value, float(threshold))
    return best
