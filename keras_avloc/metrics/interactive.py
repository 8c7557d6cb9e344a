"""IS3 (interactive sound-source localisation): two sounding objects per image, each scored with its own audio.

kaistmm/SSLalignment (Senocak et al., "Sound Source Localization is All about Cross-Modal Alignment", ICCV 2023),
`test.py:validate_lvs` and `utils.py:Evaluator_iiou`. Every entry (an image with one object's audio) gets a cIoU
at two thresholds of its min-max normalised map, both strict (`>`):

* the median: the value at index `N // 2` of the sorted map (N pixels), so N/2 - 1 pixels pass without ties;
* the adaptive one: the value at index `N - g`, g the number of ground-truth pixels (N // 2 when there are none),
  so g - 1 pixels pass.

Per entry and per image (an image counts only if every one of its entries reaches the threshold, i.e. the minimum
of its entries' cIoUs): the success rate at 0.5 ("CIoU", "iIoU") and the trapezoid area of the success curve over
the thresholds `0.05 * i` ("AUC", "iAUC"), each for both thresholds; plus the plain mean cIoU. The official script
prints them x 100; here they are fractions.

Official oddities kept (the published numbers depend on them): both thresholds keep one pixel fewer than their
names say; a group is whatever entries share a group key. Not kept: the official grouping key is the file name up
to its last `_`, which any class name holding `_` would break; here each entry names its group.

Example:
>>> table = is3_table([0.6, 0.7, 0.2, 0.9], [0.6, 0.6, 0.4, 0.8], ["a", "a", "b", "b"])
>>> table["ciou@0.5"], table["iiou@0.5"]
(0.75, 0.5)
"""

import numpy as np

from keras_avloc.metrics.localization import (
    _as_float_array,
    _ciou_counts,
    normalize_maps,
    success_curve_area,
)


def is3_cious(heatmaps, gt_maps):
    """(median cIoU, adaptive cIoU) of each map against its binary ground truth, as `Evaluator_iiou` scores them.

    Args:
        heatmaps: [N, S, S] maps at the ground-truth size (min-max normalised here, in float32).
        gt_maps: [N, S, S] binary ground truth.

    Returns:
        two float64 arrays [N].
    """
    maps = normalize_maps(_as_float_array(heatmaps, "heatmaps", ndim=3, dtype=np.float32))
    gt = _as_float_array(gt_maps, "gt_maps", ndim=3, dtype=np.float32)
    if maps.shape != gt.shape:
        raise ValueError(f"heatmaps {maps.shape} and gt_maps {gt.shape} must have the same shape.")
    flat = maps.reshape(len(maps), -1)
    gt = gt.reshape(len(gt), -1)
    pixels = flat.shape[1]
    ordered = np.sort(flat, axis=1)
    median = ordered[:, pixels // 2 : pixels // 2 + 1]
    counts = np.count_nonzero(gt, axis=1)
    counts = np.where(counts == 0, pixels // 2, counts)
    adaptive = ordered[np.arange(len(flat)), pixels - counts][:, None]
    return _ciou_counts(flat > median, gt), _ciou_counts(flat > adaptive, gt)


def is3_table(median_cious, adaptive_cious, groups):
    """IS3's table from per-entry cIoUs and each entry's image.

    Args:
        median_cious, adaptive_cious: [N] per-entry cIoU at the two thresholds (`is3_cious`).
        groups: [N] image key of each entry (entries with the same key share one image).

    Returns:
        dict with "ciou@0.5", "ciou_adap@0.5", "auc", "auc_adap" (over entries), "iiou@0.5", "iiou_adap@0.5",
        "iauc", "iauc_adap" (over images), "mean_ciou", "num_entries", "num_images", "entries_per_image"
        (sorted distinct group sizes: [2] on IS3).
    """
    median = _as_float_array(median_cious, "median_cious", ndim=1)
    adaptive = _as_float_array(adaptive_cious, "adaptive_cious", ndim=1)
    keys = np.asarray([str(group) for group in groups])
    if not len(median) == len(adaptive) == len(keys):
        raise ValueError(f"is3_table: {len(median)} median cIoUs, {len(adaptive)} adaptive cIoUs and "
                         f"{len(keys)} groups must agree.")
    if not len(keys):
        raise ValueError("is3_table: no entries.")
    _, inverse, sizes = np.unique(keys, return_inverse=True, return_counts=True)
    table = {"num_entries": int(len(keys)), "num_images": int(len(sizes)),
             "entries_per_image": sorted({int(size) for size in sizes}), "mean_ciou": float(median.mean())}
    for tag, values in (("", median), ("_adap", adaptive)):
        worst = np.full(len(sizes), np.inf)
        np.minimum.at(worst, inverse, values)
        table[f"ciou{tag}@0.5"] = float(np.mean(values >= 0.5))
        table[f"auc{tag}"] = success_curve_area(values)
        table[f"iiou{tag}@0.5"] = float(np.mean(worst >= 0.5))
        table[f"iauc{tag}"] = success_curve_area(worst)
    return table
