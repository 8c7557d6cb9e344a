"""`Evaluator`: accumulates batches of heatmaps and ground truth and reports a protocol's metrics.

Protocols (the ground truth of each is built by `keras_avloc.metrics.groundtruth`, always at 224 x 224):
    vggss       VGG-SS: binary box-union ground truth; cIoU@0.5, AUC, mean cIoU, pointing game.
    flickr      Flickr-SoundNet: soft annotator-consensus ground truth; same metrics.
    stamps      stamps benchmark: as vggss (box union), plus mask IoU and the pointing game against the
                exact masks, and SLAVC's extended protocol (silent and off-screen samples, confidence =
                mean of the top 25% scores).
    stamps-mix  stamp mixtures: as stamps, plus per-source cIoU@0.3 / AUC and PIAP when per-source maps
                are given, and CAP when class-indexed maps are given.
    music-duet  AVGN's duet protocol: per-source cIoU@0.3 / AUC, PIAP, CAP, and the union-map cIoU.

Samples whose `kind` is "silent" or "offscreen" have no visible source: they are left out of the cIoU
statistics and only enter the extended protocol (as negatives).
"""

import numpy as np

from keras_avloc.metrics.extended import extended_metrics, extended_table, top_quarter_confidence
from keras_avloc.metrics.groundtruth import PROTOCOL_GT_RULES
from keras_avloc.metrics.localization import (
    SUCCESS_THRESHOLDS,
    _as_float_array,
    _binarize,
    _ciou_counts,
    normalize_maps,
    resize_maps,
    success_auc,
    success_curve,
    success_curve_area,
)
from keras_avloc.metrics.multisource import class_aware_ap, permutation_invariant_ap, per_source_ciou

PROTOCOLS = {
    "vggss": {"gt": PROTOCOL_GT_RULES["vggss"], "extended": False, "multi": False},
    "flickr": {"gt": PROTOCOL_GT_RULES["flickr"], "extended": False, "multi": False},
    "stamps": {"gt": PROTOCOL_GT_RULES["stamps"], "extended": True, "multi": False},
    "stamps-mix": {"gt": PROTOCOL_GT_RULES["stamps-mix"], "extended": True, "multi": True},
    "music-duet": {"gt": PROTOCOL_GT_RULES["music-duet"], "extended": False, "multi": True},
    "extended-vggss": {"gt": PROTOCOL_GT_RULES["extended-vggss"], "extended": True, "multi": False},
    "extended-flickr": {"gt": PROTOCOL_GT_RULES["extended-flickr"], "extended": True, "multi": False},
}
"""Each protocol's ground-truth rule (`keras_avloc.metrics.groundtruth`), whether it adds SLAVC's
extended metrics, and whether it scores mixtures per source."""
NO_OBJECT_KINDS = ("silent", "offscreen")


class Evaluator:
    """Accumulates localisation results batch by batch.

    Args:
        protocol: one of `PROTOCOLS` ("vggss", "flickr", "stamps", "stamps-mix", "music-duet").
        resize: heatmap upsampling, "align_corners" (EZ-VSL, default) or "half_pixel" (LVS).
        strict: `>` instead of `>=` at the median threshold (original LVS script).
        threshold: "median" (the top half of each map: every published cIoU, and SLAVC's `--relative_prediction`)
            or a number applied to the maps as they are, not normalised (SLAVC's `pred_thr` on its fixed-scale maps).

    Example:
    >>> ev = Evaluator("vggss")
    >>> gt = np.zeros((1, 8, 8)); gt[0, :, :4] = 1
    >>> heat = np.zeros((1, 8, 8)); heat[0, :, :4] = 1
    >>> ev.update(heat, gt)
    >>> ev.result()["ciou@0.5"]
    1.0
    """

    CHUNK = 32  # maps processed together; keeps temporaries small enough to stay in reused memory

    def __init__(self, protocol="vggss", resize="align_corners", strict=False, threshold="median"):
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}.")
        if threshold != "median" and not isinstance(threshold, (int, float)):
            raise ValueError(f"threshold must be 'median' or a number, got {threshold!r}.")
        self.protocol = protocol
        self.options = PROTOCOLS[protocol]
        self.resize = resize
        self.strict = strict
        self.threshold = threshold
        self.reset()

    def reset(self):
        """Forgets every accumulated sample."""
        self._names, self._cious, self._hits, self._confidences = [], [], [], []
        self._has_object, self._mask_ious, self._source_cious, self._piap = [], [], [], []
        self._areas = []  # ground-truth area in pixels of a 224 grid (SLAVC's size subsets)
        self._mask_hits = []
        self._class_maps, self._class_gts = {}, {}  # class id -> list of [S*S] normalised maps / bool ground truth

    def __len__(self):
        return len(self._cious)

    def update(
        self,
        heatmaps,
        gt_maps,
        masks=None,
        kinds=None,
        names=None,
        confidences=None,
        source_heatmaps=None,
        source_gt_maps=None,
        class_heatmaps=None,
        class_ids=None,
    ):
        """Adds a batch.

        Args:
            heatmaps: [B, h, w] maps of any scale (TF tensors are accepted).
            gt_maps: [B, S, S] ground truth in [0, 1].
            masks: optional [B, S, S] masks, or a list with None for samples without a mask.
            kinds: optional list of "single" / "mixture" / "silent" / "offscreen".
            names: optional list of sample names (used by `per_sample`).
            confidences: optional [B] detection confidences; default: mean of the top 25% of the
                upsampled (not normalised) heatmap.
            source_heatmaps: optional [B, K, h, w] per-source maps (mixture protocols).
            source_gt_maps: optional [B, K, S, S] per-source ground truth.
            class_heatmaps: optional [B, K, h, w] class-indexed maps for CAP: the model's map for class
                `class_ids[b, k]` (the class of source k) in sample b; needs `source_gt_maps`.
            class_ids: optional int [B, K] class of every source (-1: unknown, left out of CAP).
        """
        maps = np.asarray(heatmaps)
        gt_all = np.asarray(gt_maps)
        if maps.ndim != 3 or gt_all.ndim != 3 or gt_all.shape[1] != gt_all.shape[2]:
            raise ValueError(f"heatmaps must be [B, h, w] and gt_maps [B, S, S]; got {maps.shape} and {gt_all.shape}.")
        batch = len(maps)
        if len(gt_all) != batch:
            raise ValueError(f"update got {batch} heatmaps but {len(gt_all)} ground-truth maps.")
        size = gt_all.shape[1]
        binary_parts, peaks = [], []
        for start in range(0, batch, self.CHUNK):
            part = slice(start, start + self.CHUNK)
            resized = resize_maps(maps[part], size, self.resize)
            gt = _as_float_array(gt_all[part], "gt_maps", dtype=np.float32).reshape(len(resized), -1)
            binary = _binarize(resized, size, self.resize, self.threshold, self.strict,
                               normalize=self.threshold == "median").reshape(len(resized), -1)
            self._cious.extend(_ciou_counts(binary, gt).tolist())
            self._areas.extend((gt.sum(axis=1, dtype=np.float64) * (224.0 / size) ** 2).tolist())
            peak = np.argmax(resized.reshape(len(resized), -1), axis=1)
            peaks.extend(peak.tolist())
            self._hits.extend((gt[np.arange(len(gt)), peak] > 0).astype(float).tolist())
            if confidences is None:
                self._confidences.extend(top_quarter_confidence(resized).tolist())
            if masks is not None:
                binary_parts.append(binary.reshape(-1, size, size))
        if confidences is not None:
            self._confidences.extend(np.asarray(confidences, dtype=np.float64).reshape(batch).tolist())
        binary = np.concatenate(binary_parts) if binary_parts else None
        kinds = list(kinds) if kinds is not None else [None] * batch
        self._has_object.extend(kind not in NO_OBJECT_KINDS for kind in kinds)
        names = list(names) if names is not None else [f"sample_{len(self._names) + i}" for i in range(batch)]
        self._names.extend(str(name) for name in names)
        self._mask_ious.extend(self._batch_mask_iou(binary, masks, batch))
        self._mask_hits.extend(self._batch_mask_hits(peaks, masks, batch))
        if source_heatmaps is not None and source_gt_maps is not None:
            self._update_sources(source_heatmaps, source_gt_maps, size)
            if class_heatmaps is not None and class_ids is not None:
                self._update_classes(class_heatmaps, class_ids, source_gt_maps, size)
        else:
            self._source_cious.extend([None] * batch)
            self._piap.extend([None] * batch)

    @staticmethod
    def _batch_mask_iou(binary, masks, batch):
        if masks is None:
            return [None] * batch
        out = []
        for pred, mask in zip(binary, masks):
            if mask is None:
                out.append(None)
                continue
            mask = np.asarray(mask) > 0.5
            if mask.shape != pred.shape:
                raise ValueError(f"mask shape {mask.shape} differs from the ground-truth map shape {pred.shape}.")
            union = np.sum(pred | mask)
            out.append(float(np.sum(pred & mask) / union) if union else 0.0)
        return out

    @staticmethod
    def _batch_mask_hits(peaks, masks, batch):
        """Pointing-game hits against the exact masks: 1 where the heatmap's maximum lies on the mask."""
        if masks is None:
            return [None] * batch
        return [None if mask is None else float(np.asarray(mask).reshape(-1)[peak] > 0.5)
                for peak, mask in zip(peaks, masks)]

    def _update_sources(self, source_heatmaps, source_gt_maps, size):
        maps = _as_float_array(source_heatmaps, "source_heatmaps", ndim=4)
        gts = _as_float_array(source_gt_maps, "source_gt_maps", ndim=4)
        batch, sources = maps.shape[:2]
        flat = resize_maps(maps.reshape(batch * sources, *maps.shape[2:]), size, self.resize)
        resized = flat.reshape(batch, sources, size, size)
        stats = per_source_ciou(resized, gts, resize=self.resize, strict=self.strict)
        self._source_cious.extend(stats["cious"].tolist())
        self._piap.extend(permutation_invariant_ap(resized, gts)[1].tolist())

    def _update_classes(self, class_heatmaps, class_ids, source_gt_maps, size):
        maps = _as_float_array(class_heatmaps, "class_heatmaps", ndim=4)
        gts = _as_float_array(source_gt_maps, "source_gt_maps", ndim=4)
        ids = np.asarray(class_ids, dtype=np.int64)
        if ids.shape != maps.shape[:2] or gts.shape[:2] != maps.shape[:2]:
            raise ValueError(f"class_ids {ids.shape}, class_heatmaps {maps.shape} and source_gt_maps {gts.shape} "
                             "must agree on [B, K].")
        batch, sources = maps.shape[:2]
        # Pixels of different samples are pooled per class, so every map is min-max normalised first
        # (as the evaluations normalise each heatmap before thresholding).
        flat = normalize_maps(resize_maps(maps.reshape(batch * sources, *maps.shape[2:]), size, self.resize))
        flat = flat.reshape(batch, sources, size * size).astype(np.float32)
        for b in range(batch):
            for k in range(sources):
                if ids[b, k] < 0:
                    continue
                self._class_maps.setdefault(int(ids[b, k]), []).append(flat[b, k])
                self._class_gts.setdefault(int(ids[b, k]), []).append(gts[b, k].reshape(-1) > 0.5)

    def class_aware_ap(self):
        """CAP over the accumulated class-indexed maps: (mean over classes, {class id: AP}).

        For class c the pixels of every sample in which c sounds are pooled (map of class c against
        the ground truth of the c source, the other sources' pixels being negatives); AP is then
        averaged over the classes. Samples in which c is silent are not pooled for c.
        """
        per_class = {}
        for class_id in sorted(self._class_maps):
            maps = np.stack(self._class_maps[class_id])[:, None, :, None]
            gts = np.stack(self._class_gts[class_id])[:, None, :, None].astype(np.float32)
            value = class_aware_ap(maps, gts)[0]
            if value == value:
                per_class[class_id] = value
        return (float(np.mean(list(per_class.values()))) if per_class else float("nan")), per_class

    def per_sample(self):
        """List of dicts (name, ciou, pointing_hit, confidence, has_object, mask_iou) in update order."""
        return [
            {
                "name": name,
                "ciou": ciou_value,
                "pointing_hit": hit,
                "confidence": conf,
                "has_object": obj,
                "mask_iou": mask_iou_value,
            }
            for name, ciou_value, hit, conf, obj, mask_iou_value in zip(
                self._names, self._cious, self._hits, self._confidences, self._has_object, self._mask_ious
            )
        ]

    def cious(self, with_object_only=True):
        """Per-sample cIoU array (by default only samples with a visible source)."""
        values = np.asarray(self._cious, dtype=np.float64)
        if with_object_only:
            values = values[np.asarray(self._has_object, dtype=bool)]
        return values

    def result(self):
        """The protocol's metrics as a JSON-serialisable dict.

        Keys: "protocol", "num_samples", "num_evaluated", "ciou@0.5", "auc", "mean_ciou",
        "pointing_game", "success_curve" ({"thresholds", "fraction"}); "mask_iou" and "mask_pointing_game"
        (the maximum on the exact mask) when masks were given;
        "extended" (SLAVC) and "extended_table" (SLAVC's whole table, `extended_table`) for extended protocols or
        when silent/off-screen samples exist; "multi_source"
        when per-source maps were given.
        """
        if not self._cious:
            raise ValueError("Evaluator.result() called before any update(); evaluate at least one sample.")
        has_object = np.asarray(self._has_object, dtype=bool)
        values = self.cious()
        result = {"protocol": self.protocol, "num_samples": len(self._cious), "num_evaluated": int(has_object.sum())}
        if values.size:
            at_half, auc = success_auc(values)
            result.update(
                {
                    "ciou@0.5": at_half,
                    "auc": auc,
                    "mean_ciou": float(values.mean()),
                    "pointing_game": float(np.mean(np.asarray(self._hits)[has_object])),
                    "success_curve": {
                        "thresholds": SUCCESS_THRESHOLDS.tolist(),
                        "fraction": success_curve(values).tolist(),
                    },
                }
            )
        mask_values = [m for m, obj in zip(self._mask_ious, has_object) if m is not None and obj]
        if mask_values:
            result["mask_iou"] = float(np.mean(mask_values))
            result["mask_pointing_game"] = float(np.mean([h for h, obj in zip(self._mask_hits, has_object)
                                                          if h is not None and obj]))
        if self.options["extended"] or not has_object.all():
            result["extended"] = extended_metrics(
                np.asarray(self._cious), np.asarray(self._confidences), has_object, ciou_thresholds=(0.3, 0.5)
            )
            result["extended_table"] = extended_table(np.asarray(self._cious), np.asarray(self._confidences),
                                                      has_object, np.asarray(self._areas))
        source_rows = [row for row in self._source_cious if row is not None]
        if source_rows:
            flat = np.concatenate([np.asarray(row) for row in source_rows])
            result["multi_source"] = {
                "ciou@0.3": float(np.mean(flat >= 0.3)),
                "auc": success_curve_area(flat),
                "mean_ciou": float(flat.mean()),
                "piap": float(np.mean([p for p in self._piap if p is not None])),
                "num_mixtures": len(source_rows),
            }
            if self._class_maps:
                cap, per_class = self.class_aware_ap()
                result["multi_source"]["cap"] = cap
                result["multi_source"]["cap_classes"] = len(per_class)
        return result
