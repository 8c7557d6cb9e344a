"""Localisation metrics matching the official evaluators, the `Evaluator`, and no-learning baselines.

Pure numpy (no TensorFlow, no file reading); `keras_avloc.evaluation` runs models and reads datasets.

Single source: `ciou`, `success_auc`, `pointing_game`, `mask_iou`. Ground truth (one rule per protocol):
`ground_truth_map`, `box_gt_map`, `flickr_gt_map`, `PROTOCOL_GT_RULES`.
Extended (SLAVC): `extended_metrics`, `extended_table` (the official table), `top_quarter_confidence`.
IS3: `is3_cious`, `is3_table`. Negative audio: `NegativeAudioEvaluator`, `NEGATIVE_KINDS`.
Multi-source (AVGN, CSOL): `permutation_invariant_ap`, `class_aware_ap`, `per_source_ciou`,
`csol_class_ciou`, `ratio_ciou`, `match_clusters`, `no_sound_area`. DenseAV: `prompted_segmentation_map`, `prompted_segmentation_miou`,
`retrieval_recall`. Shared: `average_precision`.
"""

from keras_avloc.metrics import baselines
from keras_avloc.metrics.denseav import prompted_segmentation_map, prompted_segmentation_miou
from keras_avloc.metrics.evaluator import PROTOCOLS, Evaluator
from keras_avloc.metrics.extended import extended_metrics, extended_table, top_quarter_confidence
from keras_avloc.metrics.groundtruth import (
    GT_SIZE,
    PROTOCOL_GT_RULES,
    GroundTruthError,
    box_gt_map,
    flickr_gt_map,
    ground_truth_map,
)
from keras_avloc.metrics.interactive import is3_cious, is3_table
from keras_avloc.metrics.localization import (
    SUCCESS_THRESHOLDS,
    binarize_maps,
    ciou,
    mask_iou,
    pointing_game,
    resize_maps,
    success_auc,
    success_curve,
    success_curve_area,
)
from keras_avloc.metrics.multisource import (
    class_aware_ap,
    csol_class_ciou,
    match_clusters,
    ratio_ciou,
    no_sound_area,
    per_source_ciou,
    permutation_invariant_ap,
)
from keras_avloc.metrics.negative import NEGATIVE_KINDS, NegativeAudioEvaluator
from keras_avloc.metrics.ranking import average_precision, retrieval_recall


__all__ = [
    "GT_SIZE",
    "GroundTruthError",
    "NEGATIVE_KINDS",
    "NegativeAudioEvaluator",
    "PROTOCOL_GT_RULES",
    "PROTOCOLS",
    "SUCCESS_THRESHOLDS",
    "Evaluator",
    "average_precision",
    "baselines",
    "binarize_maps",
    "box_gt_map",
    "ciou",
    "class_aware_ap",
    "csol_class_ciou",
    "match_clusters",
    "ratio_ciou",
    "extended_metrics",
    "extended_table",
    "flickr_gt_map",
    "ground_truth_map",
    "is3_cious",
    "is3_table",
    "mask_iou",
    "no_sound_area",
    "per_source_ciou",
    "permutation_invariant_ap",
    "pointing_game",
    "prompted_segmentation_map",
    "prompted_segmentation_miou",
    "resize_maps",
    "retrieval_recall",
    "success_auc",
    "success_curve",
    "success_curve_area",
    "top_quarter_confidence",
]
