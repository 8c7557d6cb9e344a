"""Negative audio: does a map go quiet when the sound cannot come from the picture?

Juanola, Haro & Fuentes, "A Critical Assessment of Visual Sound Source Localization Models Including Negative
Audio" (ICASSP 2025); xavijuanola/vssl_eval `eval.py`, `utils_dir/eval_utils.py`. Every positive (a frame with its
own audio) is also scored with three negative audios: silence, Gaussian noise and an off-screen clip of another
class. With one *universal* threshold u per method (the same for every sample and audio):

* pIA: the fraction of a negative map's pixels above u (lower is better); AOC: the area under the curve of the
  fraction of samples with pIA <= t over t = 0.05 i (higher is better);
* the positive map's IoU with its ground truth at u (mean over samples) and its AUC over the same thresholds;
* the IoU of the positive map's and the negative map's binarisations at u (empty vs empty counts 1);
* F scores: F(mean IoU, 1 - pIA) and F(AUC, AOC), per negative and against the mean over the three.

pIA is also reported at each positive map's own median and adaptive thresholds (`pia_*_median`,
`pia_*_adaptive`: no universal threshold needed). Binarisations are strict (`>`), as the official code's.
Values are fractions; the paper prints them x 100.

Official oddities not reproduced: its positive and negative maps are upsampled differently (here the same way);
its seeds do not reach the data-loading workers, so its draws cannot be repeated (here each pass draws from its own
seed); its legacy "CIoU" / "AUC" pool five thresholds (not reported).

Example:
>>> ev = NegativeAudioEvaluator([0.5])
>>> pos = np.zeros((1, 8, 8)); pos[0, :4] = 1.0
>>> gt = np.zeros((1, 8, 8)); gt[0, :4] = 1.0
>>> quiet = {kind: np.zeros((1, 8, 8)) for kind in NEGATIVE_KINDS}
>>> ev.update(pos, quiet, gt)
>>> row = ev.result()[0]
>>> row["mean_iou"], row["pia_noise"], row["f_pos_neg"]
(1.0, 0.0, 1.0)
"""

import numpy as np

from keras_avloc.metrics.localization import SUCCESS_THRESHOLDS, _as_float_array, success_curve_area

NEGATIVE_KINDS = ("silence", "noise", "offscreen")


def pia_area(values):
    """AOC: trapezoid area of the fraction of samples with pIA <= t over `SUCCESS_THRESHOLDS`."""
    values = np.asarray(values, dtype=np.float64)
    curve = [np.mean(values <= t) for t in SUCCESS_THRESHOLDS]
    return float(np.trapezoid(curve, SUCCESS_THRESHOLDS))


def binary_map_iou(first, second):
    """IoU of two binary maps per sample [N, ...]: 1 when both are empty, 0 when only one is."""
    a = np.asarray(first, dtype=bool).reshape(len(first), -1)
    b = np.asarray(second, dtype=bool).reshape(len(second), -1)
    union = np.count_nonzero(a | b, axis=1)
    inter = np.count_nonzero(a & b, axis=1)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def f_score(a, b):
    """2ab / (a + b); None when both are 0 (the official code divides 0 by 0)."""
    return None if a + b == 0 else float(2 * a * b / (a + b))


class NegativeAudioEvaluator:
    """Accumulates the negative-audio statistics at one or several universal thresholds.

    Args:
        thresholds: universal thresholds on the maps' own scale (several: the statistics of each, e.g. to choose
            one on val).
    """

    def __init__(self, thresholds):
        self.thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        if not len(self.thresholds) or not np.isfinite(self.thresholds).all():
            raise ValueError(f"thresholds must be finite numbers, got {thresholds!r}")
        count = len(self.thresholds)
        self._iou = [[] for _ in range(count)]
        self._pia = [{kind: [] for kind in NEGATIVE_KINDS} for _ in range(count)]
        self._pair_iou = [{kind: [] for kind in NEGATIVE_KINDS} for _ in range(count)]
        self._relative = {f"{kind}_{rule}": [] for kind in NEGATIVE_KINDS for rule in ("median", "adaptive")}
        self._maxima = {kind: [] for kind in ("positive",) + NEGATIVE_KINDS}

    def __len__(self):
        return len(self._maxima["positive"])

    def update(self, positive, negatives, gt_maps):
        """Adds a batch: positive maps [B, S, S], {kind: [B, S, S]} for every kind in NEGATIVE_KINDS, binary
        ground truth [B, S, S] (all at the ground-truth size)."""
        pos = _as_float_array(positive, "positive", ndim=3, dtype=np.float32).reshape(len(positive), -1)
        gt = _as_float_array(gt_maps, "gt_maps", ndim=3, dtype=np.float32).reshape(len(gt_maps), -1) > 0
        missing = [kind for kind in NEGATIVE_KINDS if kind not in negatives]
        if missing or pos.shape != gt.shape:
            raise ValueError(f"update needs positive and ground truth of one shape and maps for {NEGATIVE_KINDS}; "
                             f"got {pos.shape}, {gt.shape}, missing {missing}")
        negs = {kind: _as_float_array(negatives[kind], kind, ndim=3, dtype=np.float32).reshape(pos.shape)
                for kind in NEGATIVE_KINDS}
        pixels = pos.shape[1]
        ordered = np.sort(pos, axis=1)
        counts = np.count_nonzero(gt, axis=1)
        relative = {"median": ordered[:, pixels // 2, None],
                    "adaptive": ordered[np.arange(len(pos)), pixels - np.where(counts == 0, pixels // 2, counts)][:, None]}
        for kind in NEGATIVE_KINDS:
            self._maxima[kind].extend(negs[kind].max(axis=1).tolist())
            for rule, cut in relative.items():
                self._relative[f"{kind}_{rule}"].extend(np.mean(negs[kind] > cut, axis=1).tolist())
        self._maxima["positive"].extend(pos.max(axis=1).tolist())
        for index, threshold in enumerate(self.thresholds):
            predicted = pos > threshold
            union = np.count_nonzero(gt | predicted, axis=1)
            self._iou[index].extend(np.where(union == 0, 0.0, np.count_nonzero(gt & predicted, axis=1)
                                             / np.maximum(union, 1)).tolist())
            for kind in NEGATIVE_KINDS:
                quiet = negs[kind] > threshold
                self._pia[index][kind].extend(np.mean(quiet, axis=1).tolist())
                self._pair_iou[index][kind].extend(binary_map_iou(predicted, quiet).tolist())

    def result(self):
        """One dict per threshold: "threshold", "mean_iou", "auc", per kind "pia_<kind>", "aoc_<kind>",
        "iou_pos_<kind>", "f_pos_<kind>", "f_auc_aoc_<kind>", and "f_pos_neg", "f_auc_aoc_neg" (against the mean
        over the kinds); the threshold-free "pia_<kind>_median" / "_adaptive", "max_<kind>" / "max_positive" (mean
        map maximum), "num_samples"."""
        if not len(self):
            raise ValueError("NegativeAudioEvaluator.result() before any update().")
        shared = {f"pia_{key}": float(np.mean(values)) for key, values in self._relative.items()}
        shared.update({f"max_{kind}": float(np.mean(values)) for kind, values in self._maxima.items()})
        rows = []
        for index, threshold in enumerate(self.thresholds):
            iou = np.asarray(self._iou[index])
            row = {"threshold": float(threshold), "mean_iou": float(iou.mean()), "auc": success_curve_area(iou)}
            for kind in NEGATIVE_KINDS:
                pia = np.asarray(self._pia[index][kind])
                row[f"pia_{kind}"] = float(pia.mean())
                row[f"aoc_{kind}"] = pia_area(pia)
                row[f"iou_pos_{kind}"] = float(np.mean(self._pair_iou[index][kind]))
                row[f"f_pos_{kind}"] = f_score(row["mean_iou"], 1.0 - row[f"pia_{kind}"])
                row[f"f_auc_aoc_{kind}"] = f_score(row["auc"], row[f"aoc_{kind}"])
            row["f_pos_neg"] = f_score(row["mean_iou"], float(np.mean([1.0 - row[f"pia_{k}"] for k in NEGATIVE_KINDS])))
            row["f_auc_aoc_neg"] = f_score(row["auc"], float(np.mean([row[f"aoc_{k}"] for k in NEGATIVE_KINDS])))
            rows.append({**row, **shared, "num_samples": len(self)})
        return rows
