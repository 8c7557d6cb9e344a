"""DenseAV-style evaluation: prompted semantic segmentation (mAP, mIoU) and cross-modal retrieval.

* mAP: for each prompt class, the pixel AP of the heatmaps of all samples prompted with that class
  (pixels pooled) against their masks; averaged over classes.
* mIoU: per prompt class, its samples' pixels pooled and binarised with `>` at 20 thresholds spread from
  their minimum to their maximum; the class keeps its best IoU; mIoU is the mean over classes (the official
  `eval_utils.multi_iou`; the heatmaps are min-max normalised over the whole evaluation set before, which
  changes neither metric).
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
    """Mean over prompt classes of each class's best IoU over `num_thresholds` thresholds (the official
    `eval_utils.multi_iou`).

    For each class, the heatmaps of its samples are pooled and binarised with `>` at each of
    `np.linspace(min, max, num_thresholds)` of *those* values; IoU = |P & M| / |P | M| over the pooled pixels
    (an empty union counts as IoU 0, as the official `union = 1` guard gives); the class keeps its best IoU.

    Args:
        heatmaps: [N, H, W]; masks: [N, H, W] (> 0.5 = object); class_ids: [N] prompt class per sample.
        num_thresholds: 20 (official).

    Returns:
        (miou float, dict class_id -> best IoU).
    """
    maps = _as_float_array(heatmaps, "heatmaps", ndim=3)
    gts = _as_float_array(masks, "masks", ndim=3) > 0.5
    ids = np.asarray(class_ids)
    per_class = {}
    for c in np.unique(ids):
        select = ids == c
        values, truth = maps[select].ravel(), gts[select].ravel()
        best = 0.0
        for threshold in np.linspace(values.min(), values.max(), num_thresholds):
            pred = values > threshold
            union = np.sum(pred | truth)
            best = max(best, float(np.sum(pred & truth) / union) if union else 0.0)
        per_class[c.item()] = best
    value = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return value, per_class
