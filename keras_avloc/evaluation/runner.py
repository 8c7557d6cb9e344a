"""Running a model over records: the settings a checkpoint evaluates with, and its input batches.

Shared by the protocols that score something other than one map per record (IS3's image groups, the negative-audio
passes): each takes `model_inputs` batches and asks the model for what it needs.
"""

import os

import numpy as np


def resolve_settings(model, image_size=None, clip_seconds=None, image_mode=None, audio_level_db="model"):
    """The input settings of an evaluation: each argument, else the model's `eval_settings` (what it was trained
    with, or a ported checkpoint's official settings; `InputSettings.for_model`), else the defaults (224, 3 s,
    "squash", the file's level)."""
    from keras_avloc.data import InputSettings

    changes = {key: value for key, value in (("image_size", image_size and int(image_size)),
                                             ("clip_seconds", clip_seconds and float(clip_seconds)),
                                             ("image_mode", image_mode)) if value}
    if audio_level_db != "model":
        changes["audio_level_db"] = audio_level_db
    inputs = InputSettings.for_model(model, **changes)
    return {"image_size": inputs.image_size, "clip_seconds": inputs.clip_seconds, "image_mode": inputs.image_mode,
            "audio_level_db": inputs.audio_level_db}


def model_inputs(model, root, records, settings, batch_size, problems, progress=True, description="evaluate",
                 frontend=None):
    """Yields `(positions, images, audio)` batches of `records` (positions index `records`), in order.

    Unreadable clips are skipped and reported to `problems` (`unreadable_clips`), as `evaluate_model` does.

    Args:
        model: supplies the default audio front-end (`model.frontend`, else "lvs").
        root: dataset root; records: `load_split`-style records; settings: `resolve_settings`.
        batch_size: batch size; problems: a `report.Problems`; progress: a tqdm bar.
        frontend: audio front-end override ("lvs", "csol", "avsa" or a callable on waves).
    """
    import keras_avloc.data as data_lib
    from keras_avloc.evaluation.report import _progress

    inputs = data_lib.InputSettings(
        frontend=frontend or getattr(model, "frontend", None) or "lvs", image_size=settings["image_size"],
        clip_seconds=settings["clip_seconds"], image_mode=settings["image_mode"],
        audio_level_db=settings["audio_level_db"])
    dataset = data_lib.make_dataset(root, inputs=inputs, training=False, batch_size=batch_size, on_error="skip",
                                    records=records, ground_truth=False)
    unreadable = getattr(dataset, "skipped", None)
    reported = set()

    def report():
        for name, reason in list((unreadable.reasons if unreadable is not None else {}).items()):
            if name not in reported:
                reported.add(name)
                problems.skip("unreadable_clips", name, reason)

    total = -(-len(records) // batch_size)
    for x, y in _progress(dataset, total, description, progress):
        report()
        yield np.asarray(y["index"]).reshape(-1).astype(int), np.asarray(x["image"]), np.asarray(x["audio"])
    report()


def write_outputs(out_dir, metrics, per_sample):
    """metrics.json and per_sample.json in `out_dir` (created); returns `metrics` with their paths."""
    from keras_avloc.io.files import write_json

    if out_dir is None:
        return metrics
    os.makedirs(out_dir, exist_ok=True)
    metrics["files"] = {"per_sample": os.path.join(out_dir, "per_sample.json")}
    write_json(metrics["files"]["per_sample"], per_sample, indent=2)
    write_json(os.path.join(out_dir, "metrics.json"), metrics, indent=2)
    return metrics
