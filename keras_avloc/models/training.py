"""`train(...)`: the Python API behind `avloc train` (model.fit with checkpoints, resume and logs).

Output folder layout (`out_dir`):
    model.keras          the model after the last finished epoch (written atomically)
    backup/              BackupAndRestore state; a killed run resumes from its last finished epoch
    heatmaps/            epoch_NNN.png: heatmap overlays of a fixed (validation) batch after each epoch
    logs/                TensorBoard scalars and heatmap images when tensorboard is installed
    training_log.csv     one row per epoch (appended across resumes)
    train_state.json     the arguments and the number of completed epochs
"""

import json
import os

DEFAULT_FRONTEND = {"lvs": "lvs", "ezvsl": "lvs", "avgn": "lvs"}
DEFAULT_MIX_SOURCES = {"avgn": 2}
"""Sources mixed into each training clip by default (AVGN learns from random 2-source mixtures)."""
CLASS_AWARE_METHODS = ("avgn",)
"""Methods whose constructor needs the class vocabulary (`class_names`)."""


class TrainingError(ValueError):
    """A user-fixable problem with the training arguments or data (message names the fix)."""


def _first_batch(dataset):
    for x, _ in dataset.take(1):
        return x["image"].numpy(), x["audio"].numpy()
    raise TrainingError("the dataset is empty; check the split file and --batch-size (drop_remainder drops small splits).")


def _read_state(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def build_training_model(method, mixed_precision=None, init_image_weights=None, freeze_image_encoder=False,
                         learning_rate=None, model_kwargs=None, run_eagerly=False):
    """Builds and compiles a model for training.

    Args:
        method: "lvs" / "ezvsl" (see `keras_avloc.models.build_model`).
        mixed_precision: None or "bf16" (mixed_bfloat16 compute, float32 weights and losses).
        init_image_weights: `.weights.h5` of a `keras_avloc.backbones.ResNet18` (e.g. ImageNet weights
            ported with `avloc port-weights`) loaded into the image backbone.
        freeze_image_encoder: keep the image backbone fixed (its batch norms run in inference mode).
        learning_rate: Adam learning rate (default: the method's, 1e-4).
        model_kwargs: extra constructor arguments (e.g. {"backbone_kwargs": {"width": 8}}).
        run_eagerly: skip tf.function tracing (slower steps, ~30 s faster start; for debugging and tiny runs).

    Returns:
        A compiled model.
    """
    import keras

    from keras_avloc.models import build_model

    if mixed_precision not in (None, "bf16", "mixed_bfloat16"):
        raise TrainingError(f"--mixed-precision must be 'bf16' (or omitted), got {mixed_precision!r}.")
    previous_policy = keras.mixed_precision.global_policy()
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model(method, **dict(model_kwargs or {}))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    if init_image_weights:
        if not os.path.isfile(init_image_weights):
            raise TrainingError(
                f"{init_image_weights}: no such file; create it with `avloc port-weights` "
                "(a .weights.h5 of keras_avloc.backbones.ResNet18)."
            )
        try:
            model.image_backbone.load_weights(init_image_weights)
        except Exception as err:
            raise TrainingError(
                f"{init_image_weights} does not fit the {method} image backbone "
                f"(layer4_stride={model.image_backbone.layer4_stride}, width={model.image_backbone.width}): {err}"
            ) from err
    if freeze_image_encoder:
        model.image_backbone.trainable = False
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate or model.default_learning_rate)
    model.compile(optimizer=optimizer, run_eagerly=bool(run_eagerly))
    return model


def train(method, data_root=None, out_dir="runs/model", epochs=20, batch_size=16, split="train", val_split=None,
          learning_rate=None, image_size=224, clip_seconds=3.0, mixed_precision=None, init_image_weights=None,
          freeze_image_encoder=False, model_kwargs=None, dataset=None, val_dataset=None, seed=None,
          verbose="auto", heatmap_every=1, on_error="skip", run_eagerly=False, mix_sources=None):
    """Trains LVS / EZ-VSL / AVGN with `model.fit`, resumable after a crash or kill.

    Args:
        method: "lvs", "ezvsl" or "avgn".
        data_root: dataset folder in the keras-avloc layout (ignored when `dataset` is given).
        out_dir: output folder (see the module docstring).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: batch size.
        split: training split name (`ROOT/<split>.json`).
        val_split: optional validation split (evaluated each epoch, its first batch drawn to TensorBoard).
        learning_rate: Adam learning rate (default 1e-4 as both papers).
        image_size: square image side (224 in the papers; any multiple of 32 works).
        clip_seconds: audio length (3 s -> 257 x 200 spectrograms).
        mixed_precision: None or "bf16".
        init_image_weights: ResNet-18 `.weights.h5` for the image backbone.
        freeze_image_encoder: train only the audio side (and heads).
        model_kwargs: extra model constructor arguments, e.g. {"backbone_kwargs": {"width": 8}}.
        dataset: a ready `tf.data.Dataset` of (x, y) batches to train on instead of `data_root`.
        val_dataset: a ready validation dataset.
        seed: random seed (weights, shuffling, augmentation).
        verbose: `model.fit` verbosity (1 = progress bar).
        heatmap_every: log heatmap images every this many epochs.
        on_error: unreadable samples: "skip" (counted and reported) or "raise".
        run_eagerly: run the steps eagerly (no tracing; for debugging and tiny runs).
        mix_sources: 0 or 2 sources per training (and validation) clip when building datasets from
            `data_root`; default 2 for "avgn" (random mixtures of two classes; the frame is the first
            source's) and 0 otherwise. AVGN also gets `class_names=dataset.class_list` unless
            `model_kwargs` gives `class_names` or `num_classes`.

    Returns:
        (model, history): the trained model and the `keras.callbacks.History` of this run (None when
        the run had already finished).

    Example:
    >>> model, history = train("lvs", "datasets/stamps", "runs/lvs", epochs=5, batch_size=8)  # doctest: +SKIP
    """
    import keras

    from keras_avloc.models import load_model
    from keras_avloc.models.callbacks import AtomicModelCheckpoint, HeatmapImages, TrainingState, tensorboard_available

    if int(epochs) < 1:
        raise TrainingError(f"--epochs must be at least 1, got {epochs}.")
    method = str(method).lower().replace("-", "")
    if mix_sources is None:
        mix_sources = DEFAULT_MIX_SOURCES.get(method, 0)
    if int(mix_sources) not in (0, 2):
        raise TrainingError(f"--mix-sources must be 0 or 2, got {mix_sources}.")
    mix_sources = int(mix_sources)
    os.makedirs(out_dir, exist_ok=True)
    model_path = os.path.join(out_dir, "model.keras")
    backup_dir = os.path.join(out_dir, "backup")
    state_path = os.path.join(out_dir, "train_state.json")
    settings = {
        "method": method, "data_root": None if data_root is None else os.path.abspath(data_root), "split": split,
        "val_split": val_split, "epochs": int(epochs), "batch_size": int(batch_size), "learning_rate": learning_rate,
        "image_size": int(image_size), "clip_seconds": float(clip_seconds), "mixed_precision": mixed_precision,
        "init_image_weights": init_image_weights, "freeze_image_encoder": bool(freeze_image_encoder),
        "model_kwargs": model_kwargs or {}, "seed": seed, "mix_sources": mix_sources,
    }

    state = _read_state(state_path)
    continue_from = 0
    if state and not os.path.isdir(backup_dir) and os.path.isfile(model_path):
        if state.get("completed_epochs", 0) >= int(epochs):
            print(f"{model_path} already finished {state['completed_epochs']} epochs; nothing to do "
                  f"(raise --epochs or use a new --out to train more).")
            return load_model(model_path), None
        # A finished run asked for more epochs: continue from its saved model and optimizer state.
        continue_from = int(state.get("completed_epochs", 0))

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    if dataset is None:
        if data_root is None:
            raise TrainingError("pass --data ROOT (a dataset folder with frames/, audio/ and <split>.json).")
        from keras_avloc.data import make_dataset

        frontend = DEFAULT_FRONTEND.get(method, "lvs")
        common = dict(frontend=frontend, image_size=image_size, clip_seconds=clip_seconds, batch_size=batch_size,
                      on_error=on_error)
        # drop_remainder: the contrastive losses need at least two clips per batch.
        dataset = make_dataset(data_root, split=split, training=True, drop_remainder=True, seed=seed,
                               mix_sources=mix_sources, **common)
        if val_split and val_dataset is None:
            val_dataset = make_dataset(data_root, split=val_split, training=False, mix_sources=mix_sources,
                                       **common)
    model_kwargs = _with_class_names(method, model_kwargs, dataset)

    if continue_from:
        print(f"continuing {model_path} from epoch {continue_from} to {int(epochs)}")
        model = load_model(model_path)
        if run_eagerly:
            model.run_eagerly = True
    else:
        model = build_training_model(method, mixed_precision, init_image_weights, freeze_image_encoder,
                                     learning_rate, model_kwargs, run_eagerly)
    sample_images, sample_audio = _first_batch(val_dataset if val_dataset is not None else dataset)
    model({"image": sample_images[:2], "audio": sample_audio[:2]})  # build (BackupAndRestore needs it)

    log_dir = os.path.join(out_dir, "logs")
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
        AtomicModelCheckpoint(model_path, save_best_only=False),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "training_log.csv"), append=True),
    ]
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    else:
        print("note: the tensorboard package is not installed; heatmaps go to "
              f"{os.path.join(out_dir, 'heatmaps')} only (pip install tensorboard for {log_dir}).")
    callbacks += [
        HeatmapImages(os.path.join(out_dir, "heatmaps"), sample_images, sample_audio, log_dir=log_dir,
                      every=heatmap_every),
        TrainingState(state_path, extra={"settings": settings}),
    ]
    history = model.fit(dataset, epochs=int(epochs), initial_epoch=continue_from, validation_data=val_dataset,
                        callbacks=callbacks, verbose=verbose)
    if getattr(model, "stop_training", False) and any(
        not all(map(_finite, values)) for values in history.history.values()
    ):
        raise TrainingError(f"training stopped on a NaN/inf loss; lower --lr or check the data. Last model: {model_path}")
    return model, history


def _with_class_names(method, model_kwargs, dataset):
    """Adds `class_names=dataset.class_list` to the constructor arguments of class-aware methods."""
    model_kwargs = dict(model_kwargs or {})
    if method not in CLASS_AWARE_METHODS or "class_names" in model_kwargs or "num_classes" in model_kwargs:
        return model_kwargs
    class_list = getattr(dataset, "class_list", None)
    if not class_list:
        raise TrainingError(
            f"{method} needs the class vocabulary: the given dataset has no `class_list`; pass "
            "model_kwargs={'class_names': [...]} (or 'num_classes'), or build it with keras_avloc.data.make_dataset."
        )
    model_kwargs["class_names"] = list(class_list)
    return model_kwargs


def _finite(value):
    try:
        return value == value and abs(value) != float("inf")
    except TypeError:
        return True
