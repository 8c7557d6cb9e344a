"""`train(...)`: the Python API behind `avloc train` (model.fit with checkpoints, resume and logs).

Output folder layout (`out_dir`):
    model.keras          the model after the last finished epoch (written atomically)
    backup/              BackupAndRestore state; a killed run resumes from its last finished epoch
    heatmaps/            epoch_NNN.png: heatmap overlays of a fixed (validation) batch after each epoch
    logs/                TensorBoard scalars and heatmap images when tensorboard is installed
    training_log.csv     one row per epoch (appended across resumes)
    train_state.json     the run's settings and the number of completed epochs
    dictionary.npz       CSOL stage one: the object dictionary and pseudo-labels of the last clustering

Resuming: re-running `train` with the same `out_dir` continues the run (from `backup/` after a crash or
kill, from `model.keras` when `epochs` was raised). Every setting that shapes the model or its data is
recorded in `train_state.json` (method, model arguments, sizes, clip length, precision, the data's
fingerprint, the initial weights' fingerprint, ...) and must match: only `epochs` may grow. A run with
other settings is refused with the list of differences; use another `out_dir`, or `overwrite=True`
(`--overwrite`) to start afresh.
"""

import hashlib
import json
import os
import shutil

from keras_avloc.data.augment import get_augmentation
from keras_avloc.io.errors import AvlocError
from keras_avloc.models.registry import get_method_class, normalize_name

RUN_OUTPUTS = ("model.keras", "backup", "heatmaps", "logs", "training_log.csv", "train_state.json", "dictionary.npz")
"""What `train` writes into `out_dir` (and all that `overwrite=True` removes)."""


class TrainingError(AvlocError, ValueError):
    """A user-fixable problem with the training arguments or data (message names the fix)."""


def _first_batch(dataset):
    for x, _ in dataset.take(1):
        return x["image"].numpy(), x["audio"].numpy()
    raise TrainingError("the dataset is empty; check the split file and --batch-size (drop_remainder drops small splits).")


def _steps_per_epoch(dataset, batch_size, warmup_epochs):
    """Optimizer steps in one epoch (for the warm-up): from the split's records, else the dataset's cardinality."""
    records = getattr(dataset, "records", None)
    if records:
        return max(1, len(records) // int(batch_size))
    import tensorflow as tf

    cardinality = int(dataset.cardinality()) if isinstance(dataset, tf.data.Dataset) else -1
    if cardinality > 0:
        return cardinality
    if float(warmup_epochs) > 0:
        raise TrainingError("warmup_epochs needs the epoch length, and this dataset's is unknown (repeated or "
                            "filtered); pass a finite dataset or use warmup_epochs=0.")
    return 1


def read_state(path):
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        with open(path) as handle:
            state = json.load(handle)
        return state if isinstance(state, dict) else None
    except (OSError, ValueError):
        return None


def file_fingerprint(paths):
    """sha256 (16 hex digits) over the bytes of the existing files among `paths`, or None if none exist."""
    digest, found = hashlib.sha256(), False
    for path in paths:
        if path and os.path.isfile(path):
            found = True
            digest.update(os.path.basename(path).encode())
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:16] if found else None


def data_fingerprint(data_root, splits):
    """Fingerprint of a dataset for resume checks: its split files (and classes.txt / the stamps build id)."""
    if data_root is None:
        return None
    names = [f"{part}.json" for split in splits if split for part in str(split).split("+")]
    names += ["classes.txt", os.path.join(".parts", "params.json")]
    return file_fingerprint([os.path.join(data_root, name) for name in names])


def settings_differences(recorded, wanted):
    """[(key, recorded value, wanted value)] for every setting that differs (`epochs` never counts)."""
    differences = []
    for key in sorted(set(recorded) | set(wanted)):
        if key == "epochs":
            continue
        old, new = recorded.get(key, "<not recorded>"), wanted.get(key, "<not recorded>")
        if json.loads(json.dumps(old)) != json.loads(json.dumps(new)):
            differences.append((key, old, new))
    return differences


def check_resume(out_dir, state, settings):
    """Raises TrainingError when `out_dir` holds a run made with other settings (see the module docstring)."""
    recorded = (state or {}).get("settings")
    if not isinstance(recorded, dict):
        raise TrainingError(f"{out_dir} holds a training run without recorded settings "
                            f"({os.path.join(out_dir, 'train_state.json')}); use a new --out, or --overwrite to "
                            "start afresh.")
    differences = settings_differences(recorded, settings)
    if differences:
        listed = "; ".join(f"{key}: {old!r} there, {new!r} now" for key, old, new in differences)
        raise TrainingError(f"{out_dir} holds a run trained with other settings ({listed}). Only --epochs may "
                            "change when resuming: pass a new --out folder, or --overwrite to start that run afresh.")


def remove_run(out_dir):
    """Deletes what `train` wrote into `out_dir` (`RUN_OUTPUTS`), leaving any other file alone."""
    for name in RUN_OUTPUTS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def build_training_model(method, mixed_precision=None, init_image_weights=None, freeze_image_encoder=False,
                         learning_rate=None, model_kwargs=None, run_eagerly=False, warmup_steps=0, optimizer=None,
                         init_audio_weights=None):
    """Builds and compiles a model for training.

    Args:
        method: a registered method name (see `keras_avloc.models.method_names`).
        mixed_precision: None or "bf16" (mixed_bfloat16 layers: bf16 compute, float32 weights and losses);
            recorded in the model's config, so it reloads as bf16.
        init_image_weights: `.weights.h5` of a `keras_avloc.backbones.ResNet18` (e.g. ImageNet weights
            ported with `avloc port-weights`) loaded into the image backbone (`model.load_image_weights`; AVC /
            AVSA inflate it into their video network).
        freeze_image_encoder: keep the image backbone fixed (its batch norms run in inference mode).
        learning_rate: Adam learning rate (default: the method's, 1e-4); a method with its own schedule
            (`learning_rate_schedule`, DenseAV's two phases) takes it as its main rate.
        model_kwargs: extra constructor arguments (e.g. {"backbone_kwargs": {"width": 8}}).
        run_eagerly: skip tf.function tracing (slower steps, ~30 s faster start; for debugging and tiny runs).
        warmup_steps: linear learning-rate warm-up over this many optimizer steps (0 = constant rate, or the
            method's own schedule); the optimizer also takes the method's `optimizer_options`.
        optimizer: None for Adam (the papers'), or a Keras optimizer config ({"class_name": "SGD", "config":
            {"learning_rate": 0.01}}) used instead (`learning_rate` and the schedules then do not apply).
        init_audio_weights: `.weights.h5` of the method's audio network (DenseAV's spectrogram CNN from
            `avloc pretrain-audio`) loaded into its audio backbone (`model.load_audio_weights`).

    Returns:
        A compiled model.
    """
    import keras

    from keras_avloc.models import build_model

    if mixed_precision not in (None, "bf16", "mixed_bfloat16"):
        raise TrainingError(f"--mixed-precision must be 'bf16' (or omitted), got {mixed_precision!r}.")
    model_kwargs = dict(model_kwargs or {})
    if mixed_precision:
        model_kwargs["dtype"] = "mixed_bfloat16"
    model = build_model(method, **model_kwargs)
    if init_image_weights:
        backbone = model.image_backbone
        width = getattr(backbone, "width", getattr(model, "width", "-"))
        _load_initial_weights(
            model.load_image_weights, init_image_weights,
            "create it with `avloc port-weights` or `avloc pretrain-image` (a .weights.h5 of "
            "keras_avloc.backbones.ResNet18)",
            f"the {method} image backbone (layer4_stride={getattr(backbone, 'layer4_stride', '-')}, width={width})")
    if init_audio_weights:
        backbone = getattr(model, "audio_backbone", None)
        _load_initial_weights(
            model.load_audio_weights, init_audio_weights,
            "create it with `avloc pretrain-audio` (the weights of DenseAV's spectrogram CNN)",
            f"the {method} audio network ({getattr(backbone, 'name', 'none')}; `avloc pretrain-audio` writes DenseAV's "
            "spectrogram CNN, at the --width it was given)")
    if freeze_image_encoder:
        model.image_backbone.trainable = False
    schedule = model.learning_rate_schedule(learning_rate) if not warmup_steps else None
    if schedule is None:
        schedule = warmup_schedule(learning_rate or model.default_learning_rate, warmup_steps)
    if optimizer is None:
        optimizer = keras.optimizers.Adam(learning_rate=schedule, **model.optimizer_options)
    else:
        try:
            optimizer = keras.optimizers.deserialize(dict(optimizer))
        except (TypeError, ValueError) as err:
            raise TrainingError(f"optimizer {optimizer!r} is not a Keras optimizer config ({err}); e.g. "
                                "{'class_name': 'SGD', 'config': {'learning_rate': 0.01}}.") from None
    model.compile(optimizer=optimizer, run_eagerly=bool(run_eagerly))
    return model


def _load_initial_weights(load, path, how_to_create, network):
    """`load(path)`, or a TrainingError naming the file: missing (`how_to_create`) or not fitting `network`."""
    if not os.path.isfile(path):
        raise TrainingError(f"{path}: no such file; {how_to_create}.")
    try:
        load(path)
    except Exception as err:  # noqa: BLE001 - Keras raises several types for mismatched files
        raise TrainingError(f"{path} does not fit {network}: {err}") from err


def warmup_schedule(learning_rate, warmup_steps):
    """The constant `learning_rate`, or a linear warm-up to it over `warmup_steps` optimizer steps."""
    import keras

    if not warmup_steps:
        return learning_rate
    # Linear from ~0 to the rate over the warm-up, then constant (a cosine "decay" to alpha = 1 of itself).
    return keras.optimizers.schedules.CosineDecay(initial_learning_rate=learning_rate / warmup_steps, decay_steps=1,
                                                  alpha=1.0, warmup_target=learning_rate,
                                                  warmup_steps=int(warmup_steps))


def _check_arguments(epochs, batch_size, image_size, clip_seconds, learning_rate):
    if int(epochs) < 1:
        raise TrainingError(f"--epochs must be at least 1, got {epochs}.")
    if int(batch_size) < 2:
        raise TrainingError(f"--batch-size must be at least 2 (the contrastive losses need other clips as "
                            f"negatives), got {batch_size}.")
    if int(image_size) < 32:
        raise TrainingError(f"--image-size must be at least 32 pixels, got {image_size}.")
    if not float(clip_seconds) > 0:
        raise TrainingError(f"--clip-seconds must be positive, got {clip_seconds}.")
    if learning_rate is not None and not float(learning_rate) > 0:
        raise TrainingError(f"--lr must be positive, got {learning_rate}.")


def train(method, data_root=None, out_dir="runs/model", epochs=20, batch_size=16, split=None, val_split=None,
          learning_rate=None, image_size=None, clip_seconds=None, mixed_precision=None, init_image_weights=None,
          freeze_image_encoder=False, model_kwargs=None, dataset=None, val_dataset=None, seed=None,
          verbose="auto", heatmap_every=1, on_error="skip", run_eagerly=False, mix_sources=None, overwrite=False,
          augment=None, cache=False, warmup_epochs=0, init_from=None, strategy=None, tfrecord_dir=None,
          data_service=None, optimizer=None, callbacks=None, audio_level_db=None, init_audio_weights=None):
    """Trains a registered method (LVS, EZ-VSL, AVGN, ...) with `model.fit`, resumable after a crash or kill.

    Args:
        method: method name (see `keras_avloc.models.method_names`).
        data_root: dataset folder in the keras-avloc layout (ignored when `dataset` is given).
        out_dir: output folder (see the module docstring).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: batch size.
        split: training split name (`ROOT/<split>.json`); default the method's `default_split` ("train";
            CSOL stage two: "train_mosaic").
        val_split: optional validation split (evaluated each epoch, its first batch drawn to TensorBoard).
        learning_rate: Adam learning rate (default 1e-4 as the papers).
        image_size: square image side; default the method's `default_image_size` (224 as the papers; AVC / AVSA:
            their 112-pixel viewpoint crops).
        clip_seconds: audio length; default the method's `default_clip_seconds` (3 s -> 257 x 200 LVS
            spectrograms; CSOL: 1 s).
        mixed_precision: None (float32), "bf16", or "auto": bf16 where it is computed natively (AMX / AVX512-BF16
            CPUs, GPUs; `keras_avloc.perf.resolve_precision`), else float32; a resumed run keeps its own.
        init_image_weights: ResNet-18 `.weights.h5` for the image backbone.
        init_audio_weights: `.weights.h5` for the audio backbone (DenseAV: the speech stand-in).
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
            `data_root`; default: the method's `default_mix_sources` (AVGN: 2, random mixtures of two
            classes whose frame is the first source's). Methods with `needs_class_names` also get
            `class_names=dataset.class_list` unless `model_kwargs` gives `class_names` or `num_classes`.
        overwrite: delete a previous run in `out_dir` (only the files `train` writes) instead of resuming it.
        augment: training augmentation (`keras_avloc.data.augment`): None / "official" (the published random
            crop and flip), "strong", a dict of fields, or an `Augmentation`.
        cache: decode the training split once into memory and augment in graph (small datasets, much faster);
            AVC / AVSA keep the decoded 360° clips in memory after their first epoch.
        warmup_epochs: linear learning-rate warm-up over this many epochs (0 = the papers' constant rate).
        init_from: a `.keras` model of the method's `init_from_method` that initialises this one (required by
            CSOL stage two: the stage-one model, `model.initialize_from(loaded)`).
        strategy: None (one device), a name of `keras_avloc.training.distribute.STRATEGIES` ("auto",
            "mirrored", "multi-worker" from `TF_CONFIG`) or a `tf.distribute.Strategy`. `batch_size` is then the
            global batch, and every loss sees the global batch (see `keras_avloc.training.distribute`).
        tfrecord_dir: read the training (and validation) split from TFRecord shards written by
            `avloc data to-tfrecord` in this folder instead of the media files; under a multi-worker strategy the
            workers split the shards by file.
        optimizer: a Keras optimizer config to use instead of Adam (see `build_training_model`).
        callbacks: extra `keras.callbacks.Callback`s, run after the method's and the run's own.
        data_service: "grpc://HOST:PORT" of a tf.data service dispatcher (`avloc data-service dispatcher`):
            the training pipeline's decoding and spectrograms run on its workers instead of in this process.
        audio_level_db: scale every training clip to this RMS level (dBFS) after augmentation and before the
            front-end (`keras_avloc.data.audio.normalize_level`), recorded in the model's `eval_settings` so that
            evaluation and `avloc localize` do the same; the map then no longer depends on how loud a clip is.
            None (default): the files' own levels, as the published pipelines.

    Returns:
        (model, history): the trained model and the `keras.callbacks.History` of this run (None when
        the run had already finished).

    Raises:
        TrainingError: bad arguments, or `out_dir` holds a run with other settings (the message lists them).

    Example:
    >>> model, history = train("lvs", "datasets/stamps", "runs/lvs", epochs=5, batch_size=8)  # doctest: +SKIP
    """
    import keras

    from keras_avloc.io.files import check_output_folder
    from keras_avloc.models import load_model
    from keras_avloc.training import distribute

    method = normalize_name(method)
    try:
        model_class = get_method_class(method)
    except ValueError as err:
        raise TrainingError(str(err)) from None
    # First TensorFlow work of the run: a multi-worker strategy configures the collective ops at start-up.
    strategy = distribute.make_strategy(strategy) if strategy not in (None, "none") else None
    worker_index, num_workers = distribute.worker_role(strategy)
    if strategy is not None and strategy.num_replicas_in_sync > 1:
        if model_class.needs_feature_pass:
            raise TrainingError(f"{method} runs its clustering and class passes outside model.fit, which does not "
                                "distribute yet; train it without --strategy (one process).")
        if int(batch_size) % strategy.num_replicas_in_sync:
            raise TrainingError(f"--batch-size {batch_size} is the global batch and must be a multiple of the "
                                f"{strategy.num_replicas_in_sync} replicas.")
    if num_workers > 1 and seed is None:
        seed = distribute.DEFAULT_MULTI_WORKER_SEED
        if worker_index == 0:
            print(f"multi-worker: no --seed given; every worker shuffles with seed {seed} (pass --seed to vary it)")
    chief_out_dir = out_dir
    out_dir = distribute.worker_dir(out_dir, strategy)
    split = split or model_class.default_split
    image_size = model_class.default_image_size if image_size is None else image_size
    clip_seconds = model_class.default_clip_seconds if clip_seconds is None else clip_seconds
    _check_arguments(epochs, batch_size, image_size, clip_seconds, learning_rate)
    init_model = _initial_model(model_class, method, init_from)
    if init_model is not None:  # architecture settings default to the initialising model's
        config = init_model.get_config()
        inherited = {key: config[key] for key in getattr(model_class, "inherited_kwargs", ()) if key in config}
        model_kwargs = {**inherited, **dict(model_kwargs or {})}
    if mix_sources is None:
        mix_sources = model_class.default_mix_sources
    if int(mix_sources) not in (0, 2):
        raise TrainingError(f"--mix-sources must be 0 or 2, got {mix_sources}.")
    mix_sources = int(mix_sources)
    check_output_folder(out_dir)
    if dataset is None and data_root is None:
        raise TrainingError("pass --data ROOT (a dataset folder with frames/, audio/ and <split>.json).")
    model_path = os.path.join(out_dir, "model.keras")
    backup_dir = os.path.join(out_dir, "backup")
    state_path = os.path.join(out_dir, "train_state.json")
    if mixed_precision == "auto":
        from keras_avloc.perf import resolve_precision

        previous = (read_state(state_path) or {}).get("settings") or {}
        mixed_precision = previous["mixed_precision"] if "mixed_precision" in previous and not overwrite else \
            resolve_precision("auto")
    settings = {
        "method": method, "split": split, "val_split": val_split, "batch_size": int(batch_size),
        "learning_rate": learning_rate, "image_size": int(image_size), "clip_seconds": float(clip_seconds),
        "mixed_precision": "bf16" if mixed_precision else None,
        "init_image_weights": file_fingerprint([init_image_weights]) if init_image_weights else None,
        "freeze_image_encoder": bool(freeze_image_encoder), "model_kwargs": dict(model_kwargs or {}),
        "seed": seed, "mix_sources": mix_sources, "augment": get_augmentation(augment).to_dict(),
        "warmup_epochs": float(warmup_epochs),
        "init_from": file_fingerprint([init_from]) if init_from else None,
        "data": data_fingerprint(data_root, [split, val_split]) if dataset is None else "<dataset given in Python>",
    }
    if optimizer is not None:  # recorded only when set, so runs from before the option still resume
        settings["optimizer"] = dict(optimizer)
    if audio_level_db is not None:  # the same
        settings["audio_level_db"] = float(audio_level_db)
    if init_audio_weights:  # the same
        settings["init_audio_weights"] = file_fingerprint([init_audio_weights])
    if tfrecord_dir is not None:
        settings["tfrecord_dir"] = file_fingerprint(sorted(_tfrecord_files(tfrecord_dir, [split, val_split])))
    details = {"data_root": None if data_root is None else os.path.abspath(data_root),
               "init_image_weights_path": init_image_weights, "init_from_path": init_from,
               "init_audio_weights_path": init_audio_weights}

    state = read_state(state_path)
    if overwrite and (state is not None or os.path.exists(model_path) or os.path.isdir(backup_dir)):
        print(f"--overwrite: removing the previous run in {out_dir}")
        remove_run(out_dir)
        state = None
    if state is None and (os.path.exists(model_path) or os.path.isdir(backup_dir)):
        raise TrainingError(f"{out_dir} holds {'model.keras' if os.path.exists(model_path) else 'backup/'} but no "
                            "train_state.json, so it cannot be resumed safely; use a new --out, or --overwrite.")
    continue_from = 0
    if state is not None:
        check_resume(out_dir, state, settings)
        completed = int(state.get("completed_epochs", 0))
        if not os.path.isdir(backup_dir) and os.path.isfile(model_path):
            if completed >= int(epochs):
                print(f"{model_path} already finished {completed} epochs; nothing to do "
                      f"(raise --epochs to train more, or use a new --out).")
                return load_model(model_path), None
            # A finished run asked for more epochs: continue from its saved model and optimizer state.
            continue_from = completed
    os.makedirs(out_dir, exist_ok=True)

    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    feature_dataset = None
    model_kwargs = dict(model_kwargs or {})
    if audio_level_db is not None and (model_class.data_kind == "sphere" or not -80.0 <= float(audio_level_db) <= 0):
        raise TrainingError(f"--audio-level-db {audio_level_db}: a level between -80 and 0 dBFS, for methods that "
                            "learn from frames (360° clips keep their ambisonic levels).")
    if dataset is None and model_class.data_kind == "sphere":
        dataset, val_dataset = _sphere_datasets(model_class, data_root, split, val_split, val_dataset, batch_size,
                                                image_size, model_kwargs, seed, augment, on_error, cache)
    elif dataset is None:
        from keras_avloc.data import make_dataset

        from keras_avloc.data import InputSettings

        inputs = InputSettings(frontend=model_class.frontend, image_size=image_size, clip_seconds=clip_seconds,
                               audio_level_db=audio_level_db)
        common = dict(inputs=inputs, batch_size=batch_size, on_error=on_error, tfrecord_dir=tfrecord_dir)
        # drop_remainder: the contrastive losses need at least two clips per batch.
        if data_service:
            dataset = _service_dataset(model_class, tfrecord_dir, split, image_size, clip_seconds, batch_size, seed,
                                       mix_sources, augment, cache, audio_level_db)
        else:
            dataset = make_dataset(data_root, split=split, training=True, drop_remainder=True, seed=seed,
                                   mix_sources=mix_sources, augment=augment, cache=cache, **common)
        if model_class.needs_feature_pass:
            feature_dataset = make_dataset(data_root, split=split, training=False, mix_sources=0, **common)
        if val_split and val_dataset is None:
            val_dataset = make_dataset(data_root, split=val_split, training=False, mix_sources=mix_sources,
                                       drop_remainder=strategy is not None, **common)
    if data_service:
        from keras_avloc.data.service import through_service

        dataset = through_service(dataset, data_service, job_name=f"avloc-train-{os.path.abspath(chief_out_dir)}")
    if num_workers > 1:
        dataset = distribute.shard_policy(dataset, by_file=tfrecord_dir is not None and not data_service)
        if val_dataset is not None:
            val_dataset = distribute.shard_policy(val_dataset, by_file=False)
    model_kwargs = _with_class_names(model_class, method, model_kwargs, dataset)
    if model_class.data_kind == "sphere" and "mel_stats" not in model_kwargs and data_root is not None:
        from keras_avloc.data.sphere_dataset import mel_statistics

        model_kwargs["mel_stats"] = mel_statistics(data_root, split)
    model_kwargs.setdefault("eval_settings", {"image_size": int(image_size), "clip_seconds": float(clip_seconds),
                                              "audio_level_db": audio_level_db})

    with _scope(strategy):
        model = _training_model(method, model_path, continue_from, epochs, run_eagerly, dataset, batch_size,
                                warmup_epochs, mixed_precision, init_image_weights, freeze_image_encoder,
                                learning_rate, model_kwargs, init_model, init_from, optimizer, init_audio_weights)
        sample_images, sample_audio = _first_batch(val_dataset if val_dataset is not None else dataset)
        model({"image": sample_images[:2], "audio": sample_audio[:2]})  # build (BackupAndRestore needs it)
        return _fit(model, model_class, dataset, feature_dataset, val_dataset, out_dir, seed, state, settings,
                    details, state_path, backup_dir, model_path, log_dir=os.path.join(out_dir, "logs"),
                    heatmap_every=heatmap_every, epochs=epochs, continue_from=continue_from, verbose=verbose,
                    sample_images=sample_images, sample_audio=sample_audio, extra_callbacks=callbacks)


def _service_dataset(model_class, tfrecord_dir, split, image_size, clip_seconds, batch_size, seed, mix_sources,
                     augment, cache, audio_level_db=None):
    """The pure-graph TFRecord training pipeline that tf.data service workers can run."""
    from keras_avloc.data.tfrecord import make_graph_tfrecord_dataset

    if tfrecord_dir is None:
        raise TrainingError("data_service needs tfrecord_dir (--tfrecords DIR): the service's workers run the "
                            "pure-graph TFRecord reader; write the shards with `avloc data to-tfrecord`.")
    if mix_sources or cache or not get_augmentation(augment).is_official:
        raise TrainingError("the data-service pipeline has the published augmentation only, no mixtures and no "
                            "cache: drop --augment / --cache / --mix-sources, or train without --data-service.")
    return make_graph_tfrecord_dataset(tfrecord_dir, split, frontend=model_class.frontend, image_size=image_size,
                                       clip_seconds=clip_seconds, batch_size=batch_size, seed=seed,
                                       audio_level_db=audio_level_db)


def _scope(strategy):
    import contextlib

    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _tfrecord_files(tfrecord_dir, splits):
    import glob

    names = [part for split in splits if split for part in str(split).split("+")]
    return [path for name in names for path in glob.glob(os.path.join(tfrecord_dir, f"{name}-*-of-*.tfrecord"))
            + [os.path.join(tfrecord_dir, f"{name}.meta.json")]]


def _training_model(method, model_path, continue_from, epochs, run_eagerly, dataset, batch_size, warmup_epochs,
                    mixed_precision, init_image_weights, freeze_image_encoder, learning_rate, model_kwargs,
                    init_model, init_from, optimizer=None, init_audio_weights=None):
    """The model to fit: the saved one when a finished run continues, else a new compiled one."""
    from keras_avloc.models import load_model

    if continue_from:
        print(f"continuing {model_path} from epoch {continue_from} to {int(epochs)}")
        model = load_model(model_path)
        if run_eagerly:
            model.run_eagerly = True
    else:
        steps_per_epoch = _steps_per_epoch(dataset, batch_size, warmup_epochs)
        model = build_training_model(method, mixed_precision, init_image_weights, freeze_image_encoder,
                                     learning_rate, model_kwargs, run_eagerly,
                                     warmup_steps=int(round(float(warmup_epochs) * steps_per_epoch)),
                                     optimizer=optimizer, init_audio_weights=init_audio_weights)
        _warn_short_schedule(model, method, epochs, dataset, batch_size)
        if init_model is not None:
            try:
                model.initialize_from(init_model)
            except ValueError as err:
                raise TrainingError(f"--init-from {init_from}: {err}") from None
    return model


def _warn_short_schedule(model, method, epochs, dataset, batch_size):
    """Says so when the learning-rate schedule reaches its full rate only after the run ends (DenseAV's official
    3,000 + 1,000 steps on a small dataset), and which model arguments shorten it."""
    schedule = getattr(model.optimizer, "_learning_rate", None)
    full_rate_step = getattr(schedule, "full_rate_step", None)
    if not full_rate_step:
        return
    try:
        total = _steps_per_epoch(dataset, batch_size, 1) * int(epochs)
    except TrainingError:  # the epoch length is unknown
        return
    if total < full_rate_step:
        print(f"note: {method} reaches its full learning rate after {full_rate_step} steps (pretrain_steps + "
              f"warmup_steps), but this run has {total}; pass smaller ones in --model-kwargs, e.g. "
              f'\'{{"pretrain_steps": 0, "warmup_steps": {max(1, total // 10)}}}\'.')


def _fit(model, model_class, dataset, feature_dataset, val_dataset, out_dir, seed, state, settings, details,
         state_path, backup_dir, model_path, log_dir, heatmap_every, epochs, continue_from, verbose, sample_images,
         sample_audio, extra_callbacks=None):
    """model.fit with the run's callbacks (method callbacks, backup, checkpoint, logs, state)."""
    import keras

    from keras_avloc.training.callbacks import AtomicModelCheckpoint, HeatmapImages, TrainingState, tensorboard_available

    state_callback = TrainingState(state_path, extra={"settings": settings, "details": details},
                                   initial_epochs=int((state or {}).get("completed_epochs", 0)))
    state_callback.write()  # settings are on disk before the first step, so even a first-epoch crash is checked
    # Method callbacks first: what they change at an epoch's end (CSOL's dictionary) is then checkpointed.
    callbacks = model.training_callbacks(dataset, feature_dataset, out_dir, seed) + [
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
        AtomicModelCheckpoint(model_path),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "training_log.csv"), append=True),
    ]
    if tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    else:
        print("note: the tensorboard package is not installed; heatmaps go to "
              f"{os.path.join(out_dir, 'heatmaps')} only (pip install tensorboard for {log_dir}).")
    if model_class.draws_heatmaps:
        callbacks.append(HeatmapImages(os.path.join(out_dir, "heatmaps"), sample_images, sample_audio, log_dir=log_dir,
                                       every=heatmap_every))
    callbacks.append(state_callback)
    callbacks.extend(extra_callbacks or [])
    history = model.fit(dataset, epochs=int(epochs), initial_epoch=continue_from, validation_data=val_dataset,
                        callbacks=callbacks, verbose=verbose)
    if getattr(model, "stop_training", False) and any(
        not all(map(_finite, values)) for values in history.history.values()
    ):
        raise TrainingError(f"training stopped on a NaN/inf loss; lower --lr or check the data. Last model: {model_path}")
    return model, history


def _sphere_datasets(model_class, data_root, split, val_split, val_dataset, batch_size, image_size, model_kwargs,
                     seed, augment, on_error, cache=False):
    """Viewpoint datasets of 360° clips (AVC / AVSA): `viewpoints_per_clip` viewpoints of `frames` frames."""
    from keras_avloc.data.sphere_dataset import make_sphere_dataset

    if get_augmentation(augment) != get_augmentation(None):
        raise TrainingError(f"{model_class.__name__} has its own augmentation (flip with the mirrored sound field, "
                            f"colour jitter, gain); --augment {augment!r} does not apply to it.")
    common = dict(batch_size=batch_size, viewpoints=model_class.viewpoints_per_clip, crop_size=image_size,
                  frames=int(model_kwargs.get("frames", 8)), seed=seed, on_error=on_error,
                  crop_method=model_kwargs.get("crop_method", "random"),
                  audio_input=model_kwargs.get("audio_input", "ambix"))
    model_kwargs.setdefault("crop_size", int(image_size))
    dataset = make_sphere_dataset(data_root, split, training=True, cache=cache, **common)
    if val_split and val_dataset is None:
        val_dataset = make_sphere_dataset(data_root, val_split, training=False, drop_remainder=True, cache=cache,
                                          **common)
    return dataset, val_dataset


def _initial_model(model_class, method, init_from):
    """The loaded `init_from` model for methods that start from another method's model (else None)."""
    needed = model_class.init_from_method
    if not needed:
        if init_from:
            raise TrainingError(f"--init-from applies to methods that start from another trained model (CSOL stage "
                                f"two); {method} does not: drop it (use --init-image-weights for backbones).")
        return None
    if not init_from and getattr(model_class, "init_from_optional", False):
        return None
    if not init_from:
        raise TrainingError(f"{method} starts from a trained {needed} model: pass --init-from RUN/model.keras "
                            f"(train it first with `avloc train --method {needed} ...`).")
    if not os.path.isfile(init_from):
        raise TrainingError(f"--init-from {init_from}: no such file; it must be the model.keras of a finished "
                            f"`avloc train --method {needed}` run.")
    from keras_avloc.models import load_model

    loaded = load_model(init_from, compile=False)
    wanted = get_method_class(needed)
    if not isinstance(loaded, wanted):
        raise TrainingError(f"--init-from {init_from} holds a {type(loaded).__name__}, not a {wanted.__name__} "
                            f"(train one with `avloc train --method {needed}`).")
    return loaded


def _with_class_names(model_class, method, model_kwargs, dataset):
    """Adds `class_names=dataset.class_list` to the constructor arguments of class-aware methods."""
    model_kwargs = dict(model_kwargs or {})
    if not model_class.needs_class_names or "class_names" in model_kwargs or "num_classes" in model_kwargs:
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
