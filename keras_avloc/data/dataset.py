"""The tf.data input pipeline: `make_dataset(root, split, ...)` -> batches of `(x, y)` for `model.fit`.

Decoding (jpg/png/wav/mp4 via `keras_avloc.io.media`) and the image geometry run in parallel Python workers
(`num_parallel_calls=AUTOTUNE`; PIL, libsndfile and FFmpeg release the GIL); ImageNet normalisation and the
spectrogram front-end then run in graph with `tf.signal` on the whole batch, and batches are prefetched. The
machinery shared with the TFRecord reader is `keras_avloc.data.pipeline`.
"""

from keras_avloc.data import annotations as annotations_lib
from keras_avloc.data import augment as augment_lib
from keras_avloc.data.audio import FRONTEND_FREQUENCY_AXES, FRONTEND_SAMPLE_RATES, with_level
from keras_avloc.data.inputs import InputSettings
from keras_avloc.data.pipeline import (  # noqa: F401 - SkipReport is part of this module's public names
    SampleLoader,
    SkipCounter,
    SkipReport,
    _numpy_fetch,
    _output_signature,
    build_pipeline,
)


def make_dataset(root, split="test", inputs=None, training=False, batch_size=16, mix_sources=0, on_error="raise",
                 shuffle=None, drop_remainder=False, seed=None, repeat=False, class_list=None, tfrecord_dir=None,
                 num_shards=None, shard_index=None, records=None, cache=False, augment=None, progress=True,
                 ground_truth=True, **input_fields):
    """Builds the `tf.data.Dataset` of `(x, y)` batches for one split of a dataset in the keras-avloc layout.

    Args:
        root: dataset folder (`frames/`, `audio/`, optional `video/`, `masks/`, `<split>.json`), or a flat
            folder of `image_NN.jpg` + `audio_NN.wav`.
        split: split name; its records come from `load_split(root, split)`.
        inputs: how clips become inputs (`keras_avloc.data.InputSettings`: front-end, image size and geometry,
            clip length and level, training crop, image decoder); default `InputSettings()`. A front-end name
            stands for `InputSettings(frontend=name)`.
        training: random crop (`inputs.train_crop`) + horizontal flip (gt map flipped too), shuffling, and random
            mixture partners.
        batch_size: batch size.
        mix_sources: 0, or 2 to add a second source of a different class to the audio (deterministic partner
            when not training) and return `y["labels"]` [B, 2] and `y["gt_maps"]` [B, 2, S, S]. The second
            source's map is its annotation placed in the shown frame; annotated mixtures (records with two
            `sources`) keep their own audio and per-source maps.
        on_error: "raise" (error naming the file) or "skip" (drop the sample, count it in
            `dataset.skipped`, warn at the end of each pass).
        shuffle: shuffle the records each epoch (default: `training`).
        drop_remainder: drop the last incomplete batch.
        seed: seed for shuffling and augmentation.
        repeat: repeat forever (each pass still reports its skipped count).
        class_list: class vocabulary for `label` (default `annotations.class_names(root)`).
        tfrecord_dir: read shards written by `write_tfrecords` from this folder instead of the media files.
        num_shards, shard_index: with `tfrecord_dir`, read only every `num_shards`-th shard file starting at
            `shard_index` (multi-worker input).
        records: use these records instead of `load_split(root, split)`.
        cache: with `training`, decode every sample once into memory and augment in graph afterwards (small
            datasets such as the demo's train many epochs several times faster; refused above 4 GB).
        augment: with `training`, the augmentation: None / "official" (the published one), "strong", a dict of
            fields, or a `keras_avloc.data.augment.Augmentation`. With `cache` or a non-official augmentation
            the pipeline of `keras_avloc.data.augmented` is used (y has "label", "index" and, with
            `mix_sources=2`, "labels"; no ground-truth maps).
        progress: show a progress bar while caching.
        ground_truth: also yield `y["gt_map"]` (and, with mixtures, `y["gt_maps"]`); False skips decoding the
            masks (evaluation builds its own ground truth, `keras_avloc.evaluation`).
        **input_fields: single fields of `InputSettings` (`frontend=`, `image_size=`, `clip_seconds=`,
            `image_mode=`, `train_crop=`, `image_backend=`, `audio_level_db=`), applied over `inputs`.

    Returns:
        `tf.data.Dataset` of `(x, y)`: x = {"image": float32 [B, S, S, 3] ImageNet-normalised,
        "audio": front-end output, e.g. float32 [B, 257, F, 1] for "lvs"}; y = {"gt_map": float32 [B, S, S],
        "label": int32 [B] (-1 unknown), "index": int32 [B]}. The dataset has a `skipped` attribute
        (`SkipCounter`) and its `inputs`.

    Example:
    >>> dataset = make_dataset("datasets/mine", "test", batch_size=8)
    >>> x, y = next(iter(dataset))
    >>> x["audio"].shape
    TensorShape([8, 257, 200, 1])
    """
    import tensorflow as tf

    inputs = InputSettings.resolve(inputs, **input_fields)
    frontend, image_size, clip_seconds = inputs.frontend, int(inputs.image_size), float(inputs.clip_seconds)
    image_mode, train_crop, image_backend = inputs.image_mode, inputs.train_crop, inputs.image_backend
    audio_level_db = inputs.audio_level_db
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if mix_sources not in (0, 2):
        raise ValueError(f"mix_sources must be 0 or 2, got {mix_sources!r}")
    if tfrecord_dir is not None:
        from keras_avloc.data.tfrecord import make_tfrecord_dataset

        if training and (cache or not augment_lib.get_augmentation(augment).is_official):
            raise ValueError("TFRecord input trains with the official augmentation and without cache=True; drop "
                             "augment / cache, or train from the dataset folder.")

        dataset = make_tfrecord_dataset(
            tfrecord_dir, split=split, frontend=frontend, image_size=image_size, clip_seconds=clip_seconds,
            training=training, batch_size=batch_size, on_error=on_error, shuffle=shuffle,
            drop_remainder=drop_remainder, image_mode=image_mode, seed=seed, repeat=repeat,
            num_shards=num_shards, shard_index=shard_index, mix_sources=mix_sources, train_crop=train_crop,
            audio_level_db=audio_level_db,
        )
        dataset.inputs = inputs
        return dataset
    if records is None:
        records = annotations_lib.load_split(root, split)
    if not records:
        raise annotations_lib.AnnotationError(f"{annotations_lib.split_path(root, split)}: the split has no entries")
    if class_list is None:
        class_list = annotations_lib.class_names(root, records)
    if mix_sources == 2 and len({record.get("class", "") for record in records}) < 2 and not any(
            len(record.get("sources") or []) >= 2 for record in records):
        raise annotations_lib.AnnotationError(
            f"{annotations_lib.split_path(root, split)}: mixing two sources needs clips of at least two classes; "
            "this split has one (add classes, or train without --mix-sources 2)")
    frontend_name = frontend if isinstance(frontend, str) else None
    sample_rate = FRONTEND_SAMPLE_RATES.get(frontend_name, 16000)
    frontend_fn = with_level(frontend, audio_level_db)
    augmentation = augment_lib.get_augmentation(augment)
    if training and (cache or not augmentation.is_official):
        from keras_avloc.data.augmented import make_augmented_dataset

        skipped = SkipCounter()
        dataset, _ = make_augmented_dataset(
            SampleLoader, records, class_list, image_size, clip_seconds, sample_rate, frontend_fn, batch_size,
            augmentation, mix_sources, cache, seed, drop_remainder, repeat, on_error, skipped, progress=progress,
            image_backend=image_backend,
            frequency_axis=FRONTEND_FREQUENCY_AXES.get(frontend, 1) if isinstance(frontend, str) else 1)
        dataset.skipped = skipped
        dataset.records = records
        dataset.class_list = list(class_list)
        dataset.inputs = inputs
        return dataset
    loader = SampleLoader(records, class_list, image_size, clip_seconds, sample_rate, image_mode, training,
                          mix_sources, train_crop, image_backend, with_ground_truth=ground_truth)
    skipped = SkipCounter()
    spec = _output_signature(loader)
    fetch = _numpy_fetch(tf, loader, on_error, skipped, spec)

    shuffle = training if shuffle is None else shuffle
    positions = tf.data.Dataset.range(len(records))
    if shuffle:
        positions = positions.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    if on_error == "skip":
        positions = positions.concatenate(tf.data.Dataset.from_tensors(tf.constant(-1, tf.int64)))
    if repeat:
        positions = positions.repeat()
    dataset = build_pipeline(tf, positions, loader, fetch, frontend_fn, batch_size, on_error, skipped,
                             drop_remainder, training, shuffle, seed)
    dataset.skipped = skipped
    dataset.records = records
    dataset.class_list = list(class_list)
    dataset.inputs = inputs
    return dataset
