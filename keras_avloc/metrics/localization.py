"""Single-source localisation metrics: cIoU, success-curve AUC, pointing game, mask IoU.

These follow the official evaluators of LVS (hche11/Localizing-Visual-Sounds-the-Hard-Way), EZ-VSL,
SLAVC and FNAC exactly, vectorised over a batch of maps:

1. The heatmap is resized to `size`×`size` (224) bilinearly. The default, `resize="align_corners"`, is
   `F.interpolate(..., mode="bilinear", align_corners=True)` as in EZ-VSL / SLAVC / FNAC;
   `resize="half_pixel"` is `cv2.resize(..., INTER_LINEAR)` as in the original LVS test script;
   `resize="bicubic_align_corners"` is `F.interpolate(..., mode="bicubic", align_corners=True)` as in
   SLAVC's and AVGN's extended evaluations.
2. It is min-max normalised per image, `(h - min) / (max - min)`, left unchanged when `max == min`.
3. The threshold is the element at index `int(H*W*0.5)` of the sorted map (the upper median), and the
   prediction is `P = h >= threshold` (the `>=` of EZ-VSL's `cal_CIOU`; LVS's own script used `>`,
   available as `strict=True`). With ties at the median more than half the pixels can be positive —
   exactly as in the official code.
4. cIoU = Σ(P·G) / (ΣG + Σ(P·[G == 0])) with G the (possibly soft) ground-truth map.
5. cIoU@0.5 is the fraction of samples with cIoU >= 0.5; AUC is `sklearn.metrics.auc` (trapezoid rule)
   of fraction(cIoU >= t) over the 21 thresholds t = 0.05·i, i = 0..20 (computed as `0.05 * i`, so the
   floating-point thresholds, e.g. 0.15000000000000002, are identical to the official lists).

Precision: maps are evaluated in float32 like the official PyTorch pipeline. Maps saved at 224×224
give bit-identical cIoU to the official per-sample loop; upsampled maps agree with
`F.interpolate(align_corners=True)` / `cv2.resize` to float32 rounding (≤ 1 ulp).

Deliberate departures from the official code (its known bugs): a 0/0 cIoU (no positive pixel and no
ground truth, only possible with an absolute threshold) is 0 instead of NaN; SLAVC's/AVGN's
`precision_at_50` progress print uses `> 0.5` while every reported number uses `>=` — here `>=`
throughout; AVGN's swapped `average_precision_score` arguments are fixed (see `multisource`).

Ground truth maps (one rule per protocol, at 224 x 224 whatever the model's input size) are built in
`keras_avloc.metrics.groundtruth`.
"""

import numpy as np

SUCCESS_THRESHOLDS = np.array([0.05 * i for i in range(21)])
"""The 21 cIoU thresholds of the official AUC, built exactly as `[0.05 * i for i in range(21)]`."""

RESIZE_MODES = ("align_corners", "half_pixel", "bicubic_align_corners")
BICUBIC_A = -0.75  # PyTorch's cubic convolution coefficient


def _as_float_array(values, name, ndim=None, dtype=np.float64):
    array = np.asarray(values)
    if array.dtype != np.float32 or dtype != np.float32:
        array = array.astype(dtype)
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dimensions, got shape {array.shape}.")
    if array.size and not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(
            f"`{name}` contains {bad} NaN/inf values; fix the model output (e.g. a division by zero in "
            "normalisation) or drop those samples before evaluating."
        )
    return array


def _interpolation_matrix(in_size, out_size, mode):
    """[out_size, in_size] matrix M so that M @ x is the 1-D linear resize of x."""
    matrix = np.zeros((out_size, in_size))
    if in_size == 1:
        matrix[:, 0] = 1.0
        return matrix
    out_index = np.arange(out_size, dtype=np.float64)
    if mode == "bicubic_align_corners":
        position = out_index * (in_size - 1) / max(out_size - 1, 1)
        base = np.floor(position).astype(int)
        t = position - base
        a = BICUBIC_A
        near = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
        far = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
        weights = [far(t + 1), near(t), near(1 - t), far(2 - t)]
        rows = np.arange(out_size)
        for offset, weight in zip((-1, 0, 1, 2), weights):
            np.add.at(matrix, (rows, np.clip(base + offset, 0, in_size - 1)), weight)
        return matrix
    if mode == "align_corners":
        position = out_index * (in_size - 1) / max(out_size - 1, 1)
    elif mode == "half_pixel":
        position = (out_index + 0.5) * in_size / out_size - 0.5
        position = np.clip(position, 0.0, in_size - 1)
    else:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {mode!r}.")
    low = np.clip(np.floor(position).astype(int), 0, in_size - 2)
    weight_high = position - low
    rows = np.arange(out_size)
    matrix[rows, low] += 1.0 - weight_high
    matrix[rows, low + 1] += weight_high
    return matrix


def resize_maps(heatmaps, size=224, resize="align_corners"):
    """Bilinearly resizes a batch of maps to `size`×`size`.

    Args:
        heatmaps: array [N, h, w].
        size: output side length.
        resize: "align_corners" (PyTorch bilinear `align_corners=True`, EZ-VSL / FNAC), "half_pixel"
            (OpenCV `INTER_LINEAR`, LVS) or "bicubic_align_corners" (PyTorch bicubic, SLAVC / AVGN).

    Returns:
        float32 array [N, size, size] (float32 like the official PyTorch / OpenCV resize); the input
        itself when it already has that size.
    """
    maps = _as_float_array(heatmaps, "heatmaps", ndim=3, dtype=np.float32)
    _, height, width = maps.shape
    if (height, width) == (size, size):
        return maps
    rows = _interpolation_matrix(height, size, resize)
    cols = _interpolation_matrix(width, size, resize)
    return np.matmul(np.matmul(rows.astype(np.float32), maps), cols.T.astype(np.float32))


def normalize_maps(heatmaps):
    """Per-map min-max normalisation `(h - min) / (max - min)`; constant maps are left unchanged.

    Computed in the input's precision (float32 maps stay float32, as in the official scripts, so
    rounding-induced ties at the median are reproduced).
    """
    maps = np.array(heatmaps, dtype=np.float32 if np.asarray(heatmaps).dtype == np.float32 else np.float64)
    flat = maps.reshape(len(maps), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    varying = span[:, 0] != 0
    if varying.all():
        flat -= low
        flat /= span
    elif varying.any():
        flat[varying] = (flat[varying] - low[varying]) / span[varying]
    return flat.reshape(maps.shape)


def binarize_maps(heatmaps, size=224, resize="align_corners", threshold="median", strict=False, normalize=True):
    """Resizes, normalises and thresholds maps into the official binary predictions.

    Args:
        heatmaps: array [N, h, w], any scale.
        size: evaluation resolution (224 in every published protocol).
        resize: see `resize_maps`.
        threshold: "median" (upper median, top 50%: SLAVC's `--relative_prediction`) or a float.
        strict: use `>` instead of `>=` (the original LVS script).
        normalize: min-max normalise each map before a float threshold (the LVS / EZ-VSL scripts). SLAVC's test
            without `--relative_prediction` applies `pred_thr` 0.5 to maps on a fixed scale shared by all samples
            (cosines mapped from [-1, 1] to [0, 1]), not normalised: pass `normalize=False` and such maps. The
            median threshold does not depend on it.

    Returns:
        bool array [N, size, size].
    """
    return _binarize(_as_float_array(heatmaps, "heatmaps", ndim=3, dtype=np.float32), size, resize, threshold, strict,
                     normalize)


def _binarize(maps, size, resize, threshold, strict, normalize=True):
    """`binarize_maps` without input validation (maps: finite float32 [N, h, w])."""
    if maps.shape[1:] != (size, size):
        rows = _interpolation_matrix(maps.shape[1], size, resize).astype(np.float32)
        cols = _interpolation_matrix(maps.shape[2], size, resize).T.astype(np.float32)
        maps = np.matmul(np.matmul(rows, maps), cols)
    if normalize:
        maps = normalize_maps(maps)
    flat = maps.reshape(len(maps), -1)
    if isinstance(threshold, str):
        if threshold != "median":
            raise ValueError(f"threshold must be 'median' or a number, got {threshold!r}.")
        kth = int(flat.shape[1] * 0.5)
        cut = np.partition(flat, kth, axis=1)[:, kth : kth + 1]
    else:
        cut = np.full((len(flat), 1), float(threshold))
    positive = flat > cut if strict else flat >= cut
    return positive.reshape(maps.shape)


def ciou_from_binary(predictions, gt_maps):
    """cIoU = Σ(P·G) / (ΣG + Σ(P·[G==0])) per sample; 0 where the denominator is 0.

    Args:
        predictions: bool/0-1 array [N, H, W].
        gt_maps: array [N, H, W] in [0, 1].

    Returns:
        float64 array [N].
    """
    pred = np.asarray(predictions, dtype=bool).reshape(len(predictions), -1)
    gt = _as_float_array(gt_maps, "gt_maps", dtype=np.float32).reshape(len(gt_maps), -1)
    if pred.shape != gt.shape:
        raise ValueError(f"predictions {np.shape(predictions)} and gt_maps {np.shape(gt_maps)} differ in shape.")
    return _ciou_counts(pred, gt)


def _ciou_counts(pred, gt):
    """`ciou_from_binary` on validated flat inputs: pred bool [N, K], gt float32 [N, K]."""
    # Ground-truth values are multiples of 0.5 and maps have < 2^22 pixels, so float32 sums are exact.
    intersection = np.einsum("nk,nk->n", gt, pred.astype(np.float32)).astype(np.float64)
    false_positive = np.count_nonzero(pred & (gt == 0), axis=1).astype(np.float64)
    denominator = gt.sum(axis=1, dtype=np.float32).astype(np.float64) + false_positive
    return np.divide(intersection, denominator, out=np.zeros_like(intersection), where=denominator > 0)


def ciou(heatmaps, gt_maps, resize="align_corners", threshold="median", strict=False, chunk=32, normalize=True):
    """Consensus IoU of each heatmap with its ground truth (official LVS / EZ-VSL protocol).

    Args:
        heatmaps: array [N, h, w] of any scale (upsampled to the ground-truth size).
        gt_maps: array [N, H, W] in [0, 1] (binary for VGG-SS, soft for Flickr), H == W.
        resize: "align_corners" (default, EZ-VSL) or "half_pixel" (LVS / OpenCV).
        threshold: "median" (default) or a float on the min-max normalised map (`normalize`).
        strict: `>` instead of `>=` at the threshold.
        normalize: see `binarize_maps` (False: a float threshold on maps of a fixed scale, SLAVC's `pred_thr`).
        chunk: maps processed at once (bounds memory; small chunks reuse allocator memory).

    Returns:
        float64 array [N] of cIoU values in [0, 1] (heatmaps are evaluated in float32).

    Example:
    >>> gt = np.zeros((1, 4, 4)); gt[0, :, :2] = 1
    >>> heat = np.array([[[1.0, 1.0, 0.0, 0.0]] * 4])
    >>> float(ciou(heat, gt)[0])
    1.0
    """
    maps = np.asarray(heatmaps)
    gt = np.asarray(gt_maps)
    if maps.ndim != 3 or gt.ndim != 3:
        raise ValueError(f"heatmaps and gt_maps must be [N, h, w] and [N, S, S], got {maps.shape} and {gt.shape}.")
    if len(maps) != len(gt):
        raise ValueError(f"{len(maps)} heatmaps but {len(gt)} ground-truth maps.")
    if gt.shape[1] != gt.shape[2]:
        raise ValueError(f"gt_maps must be square [N, S, S], got {gt.shape}.")
    size = gt.shape[1]
    out = np.zeros(len(maps))
    for start in range(0, len(maps), chunk):
        part = slice(start, start + chunk)
        binary = _binarize(_as_float_array(maps[part], "heatmaps", dtype=np.float32), size, resize, threshold, strict,
                           normalize)
        gt_part = _as_float_array(gt[part], "gt_maps", dtype=np.float32)
        out[part] = _ciou_counts(binary.reshape(len(binary), -1), gt_part.reshape(len(gt_part), -1))
    return out


def success_curve(cious, thresholds=SUCCESS_THRESHOLDS):
    """Fraction of samples with cIoU >= t for each threshold t (the curve under the AUC)."""
    values = _as_float_array(cious, "cious", ndim=1)
    if values.size == 0:
        raise ValueError("success_curve needs at least one cIoU value.")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return (values[None, :] >= thresholds[:, None]).mean(axis=1)


def success_auc(cious):
    """(cIoU@0.5, AUC) as published: fraction with cIoU >= 0.5, and the trapezoid area of the success curve.

    The AUC is `sklearn.metrics.auc([0.05*i for i in range(21)], success_curve(cious))`, i.e. the
    trapezoid rule over 21 points with spacing 0.05 (a perfect model scores 1.0).

    Args:
        cious: array [N] of per-sample cIoU.

    Returns:
        tuple (ciou_at_0_5, auc) of floats.

    Example:
    >>> success_auc([1.0, 0.0])
    (0.5, 0.5125)
    """
    at_half = float(np.mean(np.asarray(cious, dtype=np.float64) >= 0.5))
    return at_half, success_curve_area(cious)


def success_curve_area(cious):
    """The published AUC: trapezoid area of `success_curve(cious)` over `SUCCESS_THRESHOLDS` (the one
    implementation every AUC in keras-avloc uses)."""
    return float(np.trapezoid(success_curve(cious), SUCCESS_THRESHOLDS))


def pointing_game(heatmaps, gt_maps, resize="align_corners"):
    """Pointing-game hits: 1 where the heatmap's maximum (first in row-major order) lies on G > 0.

    Args:
        heatmaps: [N, h, w] (resized to the ground-truth size first).
        gt_maps: [N, S, S].

    Returns:
        float64 array [N] of 0/1 hits (mean = hit rate).
    """
    gt = _as_float_array(gt_maps, "gt_maps", ndim=3)
    maps = resize_maps(heatmaps, gt.shape[1], resize).reshape(len(gt), -1)
    peak = np.argmax(maps, axis=1)
    return (gt.reshape(len(gt), -1)[np.arange(len(gt)), peak] > 0).astype(np.float64)


def mask_iou(heatmaps, masks, resize="align_corners", threshold="median"):
    """IoU |P ∩ M| / |P ∪ M| of the binarised heatmap P with a segmentation mask M (M > 0.5).

    Returns 0 where the union is empty.

    Args:
        heatmaps: [N, h, w]; masks: [N, S, S] (0/1 or 0..1).

    Returns:
        float64 array [N].
    """
    mask = _as_float_array(masks, "masks", ndim=3) > 0.5
    pred = binarize_maps(heatmaps, mask.shape[1], resize, threshold)
    inter = np.sum(pred & mask, axis=(1, 2)).astype(np.float64)
    union = np.sum(pred | mask, axis=(1, 2)).astype(np.float64)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
