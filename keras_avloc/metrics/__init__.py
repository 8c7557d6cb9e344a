"""Localisation metrics matching the official evaluators, the `Evaluator`, and no-learning baselines.

Single source: `ciou`, `success_auc`, `box_gt_map`, `flickr_gt_map`, `pointing_game`, `mask_iou`.
Extended (SLAVC): `extended_metrics`, `top_quarter_confidence`.
Multi-source (AVGN, CSOL): `permutation_invariant_ap`, `class_aware_ap`, `per_source_ciou`,
`csol_class_ciou`, `no_sound_area`. DenseAV: `prompted_segmentation_map`, `prompted_segmentation_miou`,
`retrieval_recall`. Shared: `average_precision`.
"""

from keras_avloc.metrics import baselines
from keras_avloc.metrics.denseav import prompted_segmentation_map, prompted_segmentation_miou
from keras_avloc.metrics.evaluator import PROTOCOLS, Evaluator
from keras_avloc.metrics.extended import extended_metrics, top_quarter_confidence
from keras_avloc.metrics.localization import (
    SUCCESS_THRESHOLDS,
    binarize_maps,
    box_gt_map,
    ciou,
    flickr_gt_map,
    mask_iou,
    pointing_game,
    resize_maps,
    success_auc,
    success_curve,
)
from keras_avloc.metrics.multisource import (
    class_aware_ap,
    csol_class_ciou,
    no_sound_area,
    per_source_ciou,
    permutation_invariant_ap,
)
from keras_avloc.metrics.ranking import average_precision, retrieval_recall


def evaluate_model(model, root, split="test", protocol="vggss", out_dir=None, batch_size=16, **kwargs):
    """Evaluates a model on ROOT's split and writes metrics.json and plots; see `report.evaluate_model`."""
    from keras_avloc.metrics.report import evaluate_model as _evaluate_model

    return _evaluate_model(model, root, split=split, protocol=protocol, out_dir=out_dir, batch_size=batch_size, **kwargs)


def evaluate_heatmaps(heatmaps_npz, root, split="test", protocol="vggss", out_dir=None, **kwargs):
    """Scores saved heatmaps against ROOT's split; see `report.evaluate_heatmaps`."""
    from keras_avloc.metrics.report import evaluate_heatmaps as _evaluate_heatmaps

    return _evaluate_heatmaps(heatmaps_npz, root, split=split, protocol=protocol, out_dir=out_dir, **kwargs)


__all__ = [
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
    "evaluate_heatmaps",
    "evaluate_model",
    "extended_metrics",
    "flickr_gt_map",
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
    "top_quarter_confidence",
]
