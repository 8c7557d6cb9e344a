"""Evaluation: run a model (or read saved heatmaps) over a dataset split and score it with a published
protocol, next to the no-learning baselines.

Example:
>>> from keras_avloc.evaluation import evaluate_model
>>> metrics = evaluate_model(model, "datasets/stamps", split="test", protocol="stamps", out_dir="runs/eval")  # doctest: +SKIP
"""

from keras_avloc.evaluation.report import (
    EvaluationError,
    evaluate_heatmaps,
    evaluate_model,
    load_heatmaps_npz,
    match_predicted_sources,
    mixture_maps,
    record_ground_truth,
    results_table,
)
from keras_avloc.evaluation.extended import evaluate_extended, extended_results_table
from keras_avloc.evaluation.is3 import evaluate_is3, is3_results_table
from keras_avloc.evaluation.negative_audio import choose_threshold, evaluate_negative_audio, negative_audio_table
from keras_avloc.evaluation.prompted import disentanglement, evaluate_prompted, prompted_table
from keras_avloc.evaluation.sphere import evaluate_probes, evaluate_sphere, sphere_table, sweep_map

__all__ = [
    "EvaluationError",
    "choose_threshold",
    "disentanglement",
    "evaluate_extended",
    "evaluate_is3",
    "evaluate_negative_audio",
    "extended_results_table",
    "is3_results_table",
    "negative_audio_table",
    "evaluate_probes",
    "evaluate_heatmaps",
    "evaluate_prompted",
    "evaluate_sphere",
    "evaluate_model",
    "load_heatmaps_npz",
    "match_predicted_sources",
    "mixture_maps",
    "prompted_table",
    "record_ground_truth",
    "results_table",
    "sphere_table",
    "sweep_map",
]
