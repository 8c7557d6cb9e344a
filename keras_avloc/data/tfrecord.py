"""TFRecord shards for large datasets and multi-worker input.

`write_tfrecords(root, out_dir, split)` stores, per clip, the encoded frame (the original jpg bytes, or the mp4's
middle frame re-encoded as JPEG q95), the whole audio track as 16 kHz mono PCM16, the boxes, the mask PNG and
the class, in `out_dir/<split>-SSSSS-of-NNNNN.tfrecord` plus `out_dir/<split>.meta.json` (class list, counts).
`make_tfrecord_dataset(out_dir, split, ...)` yields the same `(x, y)` batches as `make_dataset`.
"""

import contextlib
import glob
import json
import os

import numpy as np

from keras_avloc.data import annotations as annotations_lib
from keras_avloc.data.audio import with_level
from keras_avloc.io import media
from keras_avloc.io.files import atomic_output, write_json

TFRECORD_SAMPLE_RATE = 16000


def shard_paths(out_dir, split, shards):
    """The shard file names for `split`: `<split>-00000-of-0000N.tfrecord`, ..."""
    return [os.path.join(out_dir, f"{split}-{index:05d}-of-{shards:05d}.tfrecord") for index in range(shards)]


def meta_path(out_dir, split):
    return os.path.join(out_dir, f"{split}.meta.json")


def _serialize(tf, record, position, image_bytes, wave, mask_bytes):
    def bytes_feature(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def float_feature(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def int_feature(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    sources = record.get("sources") or []
    features = {
        "file": bytes_feature([record["file"].encode()]),
        "class": bytes_feature([(record.get("class") or "").encode()]),
        "index": int_feature([position]),
        "boxes": float_feature(np.asarray(record.get("boxes", []), np.float32).reshape(-1).tolist()),
        "gt": bytes_feature([(record.get("gt") or "union").encode()]),
        "image": bytes_feature([image_bytes]),
        "audio_pcm16": bytes_feature([pcm]),
        "sample_rate": int_feature([TFRECORD_SAMPLE_RATE]),
        "mask_png": bytes_feature([mask_bytes or b""]),
        "source_classes": bytes_feature([(source.get("class") or "").encode() for source in sources]),
        "source_box_counts": int_feature([len(source.get("boxes", [])) for source in sources]),
        "source_boxes": float_feature(
            np.concatenate([np.asarray(s.get("boxes", []), np.float32).reshape(-1) for s in sources]).tolist()
            if sources else []
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _encoded_image(record):
    path = record.get("image")
    if path and os.path.exists(path):
        media.read_image(path)  # validates (corrupt / truncated files raise MediaError)
        with open(path, "rb") as handle:
            return handle.read()
    video = record.get("video")
    if video and os.path.exists(video):
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(media.middle_frame(video)).save(buffer, format="JPEG", quality=95)
        return buffer.getvalue()
    raise media.MediaError(f"{path}: image file does not exist (nor does {video}); re-extract the clip")


def _full_wave(record):
    path = record.get("audio")
    source = path if path and os.path.exists(path) else record.get("video")
    if not source or not os.path.exists(source):
        raise media.MediaError(f"{path}: audio file does not exist (nor does {record.get('video')})")
    return media.read_audio(source, TFRECORD_SAMPLE_RATE)


def write_tfrecords(root, out_dir, split="train", shards=8, on_error="skip", progress=True):
    """Converts one split of a dataset in the keras-avloc layout into TFRecord shards.

    Clips are assigned round-robin (clip i -> shard i % shards), so every shard holds a similar mix.
    Each shard is written to a temporary file and renamed when complete.

    Args:
        root: dataset folder.
        out_dir: output folder (created).
        split: split to convert.
        shards: number of shard files.
        on_error: "skip" (count and leave out bad clips) or "raise".
        progress: show a tqdm bar.

    Returns:
        dict with `written`, `skipped` (list of `[file, reason]`), `shards` (paths) and `meta` (path).

    Example:
    >>> write_tfrecords("datasets/mine", "shards/", split="train", shards=4)["written"]
    128
    """
    import tensorflow as tf
    from tqdm import tqdm

    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    records = annotations_lib.load_split(root, split)
    os.makedirs(out_dir, exist_ok=True)
    paths = shard_paths(out_dir, split, shards)
    written, skipped = 0, []
    with contextlib.ExitStack() as stack:  # every shard appears only when all of them are complete
        temporaries = [stack.enter_context(atomic_output(path, suffix=".tfrecord")) for path in paths]
        writers = [stack.enter_context(contextlib.closing(tf.io.TFRecordWriter(tmp))) for tmp in temporaries]
        for position, record in enumerate(tqdm(records, desc=f"to-tfrecord {split}", disable=not progress,
                                               unit="clip")):
            try:
                image_bytes = _encoded_image(record)
                wave = _full_wave(record)
                mask_bytes = None
                if record.get("mask"):
                    media.read_image(record["mask"])
                    with open(record["mask"], "rb") as handle:
                        mask_bytes = handle.read()
            except (media.MediaError, OSError) as err:
                if on_error != "skip":
                    raise
                skipped.append([record["file"], str(err)])
                continue
            writers[position % shards].write(_serialize(tf, record, position, image_bytes, wave, mask_bytes))
            written += 1
        for writer in writers:
            writer.close()
    meta = {"split": split, "shards": shards, "written": written, "skipped": skipped,
            "class_list": annotations_lib.class_names(root, records), "records": len(records)}
    write_json(meta_path(out_dir, split), meta)
    return {"written": written, "skipped": skipped, "shards": paths, "meta": meta_path(out_dir, split)}


def parse_example(serialized):
    """Parses one serialized example (bytes) into `(record, image_bytes, wave)` in numpy."""
    import tensorflow as tf

    feature = tf.train.Example.FromString(serialized).features.feature

    def first_bytes(name):
        values = feature[name].bytes_list.value
        return values[0] if values else b""

    boxes = np.asarray(feature["boxes"].float_list.value, np.float32).reshape(-1, 4)
    counts = list(feature["source_box_counts"].int64_list.value)
    flat = np.asarray(feature["source_boxes"].float_list.value, np.float32).reshape(-1, 4)
    sources, start = [], 0
    for name, count in zip(feature["source_classes"].bytes_list.value, counts):
        sources.append({"class": name.decode(), "boxes": flat[start : start + count], "mask": None})
        start += count
    mask = first_bytes("mask_png")
    record = {
        "file": first_bytes("file").decode(),
        "class": first_bytes("class").decode(),
        "boxes": boxes,
        "gt": first_bytes("gt").decode() or "union",
        "mask": mask or None,
        "sources": sources,
    }
    wave = np.frombuffer(first_bytes("audio_pcm16"), "<i2").astype(np.float32) / 32767.0
    if wave.size == 0:
        raise media.MediaError(f"{record['file']}: the TFRecord example holds no audio samples")
    return record, int(feature["index"].int64_list.value[0]), first_bytes("image"), wave


def make_tfrecord_dataset(tfrecord_dir, split="train", frontend="lvs", image_size=224, clip_seconds=3.0,
                          training=False, batch_size=16, on_error="raise", shuffle=None, drop_remainder=False,
                          image_mode="squash", seed=None, repeat=False, num_shards=None, shard_index=None,
                          mix_sources=0, shuffle_buffer=1024, class_list=None, train_crop="random", audio_level_db=None):
    """Reads shards written by `write_tfrecords` into the same `(x, y)` batches as `make_dataset`.

    Args:
        tfrecord_dir: folder holding `<split>-*.tfrecord` and `<split>.meta.json`.
        split: split name.
        num_shards, shard_index: read only shard files `shard_index, shard_index + num_shards, ...` (one worker
            of a multi-worker job). Without them, `tf.distribute` can auto-shard by file.
        shuffle_buffer: examples in the shuffle buffer when shuffling.
        (other arguments as in `make_dataset`; `mix_sources=2` is not supported on TFRecords.)

    Returns:
        `tf.data.Dataset` of `(x, y)` with a `skipped` attribute; `y["index"]` is the position in the split.
    """
    import tensorflow as tf

    from keras_avloc.data import pipeline as dataset_lib

    if mix_sources:
        raise ValueError("mix_sources is not supported with tfrecord_dir; read the media folder for mixtures")
    files = sorted(glob.glob(os.path.join(tfrecord_dir, f"{split}-*-of-*.tfrecord")))
    if not files:
        raise FileNotFoundError(
            f"{tfrecord_dir}: no {split}-*-of-*.tfrecord shards; create them with "
            f"`avloc data to-tfrecord ROOT {tfrecord_dir} --split {split}`"
        )
    if num_shards is not None:
        index = int(shard_index or 0)
        if not 0 <= index < num_shards:
            raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
        files = files[index::num_shards]
        if not files:
            raise ValueError(f"{tfrecord_dir}: worker {index} of {num_shards} gets no shard; write more shards")
    if class_list is None:
        meta = meta_path(tfrecord_dir, split)
        if os.path.exists(meta):
            with open(meta, encoding="utf-8") as handle:
                class_list = json.load(handle).get("class_list", [])
        else:
            class_list = []
    from keras_avloc.data.audio import FRONTEND_SAMPLE_RATES

    if isinstance(frontend, str) and FRONTEND_SAMPLE_RATES[frontend] != TFRECORD_SAMPLE_RATE:
        raise ValueError(f"TFRecord audio is stored at {TFRECORD_SAMPLE_RATE} Hz; front-end {frontend!r} "
                         f"needs {FRONTEND_SAMPLE_RATES[frontend]} Hz")
    loader = dataset_lib.SampleLoader([], class_list, image_size, clip_seconds, TFRECORD_SAMPLE_RATE, image_mode,
                                      training, 0, train_crop)
    skipped = dataset_lib.SkipCounter()
    spec = dataset_lib._output_signature(loader)
    size, length = loader.image_size, int(round(TFRECORD_SAMPLE_RATE * loader.clip_seconds))
    empty = [np.zeros([size, size, 3], np.uint8), np.zeros([length], np.float32), np.zeros([size, size], np.float32),
             np.int32(-1), np.int32(-1)]

    def load(serialized, seed):
        if not serialized:  # end-of-pass sentinel
            return empty + [np.bool_(True)]
        name = "?"
        try:
            record, position, image_bytes, wave = parse_example(serialized)
            name = record["file"]
            sample = loader.load_record(record, position, int(seed), image_bytes=image_bytes, wave=wave)
        except (media.MediaError, OSError, ValueError, RuntimeError) as err:
            if on_error != "skip":
                raise
            skipped.note(name, str(err))
            return empty[:4] + [np.int32(-2)] + [np.bool_(False)]
        return [sample[key] for key, _, _ in spec] + [np.bool_(True)]

    dtypes = [getattr(tf, dtype) for _, dtype, _ in spec] + [tf.bool]

    def fetch(serialized, seed):
        return tuple(tf.numpy_function(load, [serialized, seed], dtypes, stateful=True))

    shuffle = training if shuffle is None else shuffle
    file_dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        file_dataset = file_dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    examples = file_dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shuffle:
        examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if on_error == "skip":
        examples = examples.concatenate(tf.data.Dataset.from_tensors(tf.constant(b"")))
    if repeat:
        examples = examples.repeat()
    dataset = dataset_lib.build_pipeline(tf, examples, loader, fetch, with_level(frontend, audio_level_db), batch_size,
                                         on_error, skipped, drop_remainder, training, shuffle, seed)
    dataset.skipped = skipped
    dataset.class_list = list(class_list)
    dataset.files = files
    return dataset


def make_graph_tfrecord_dataset(tfrecord_dir, split="train", frontend="lvs", image_size=224, clip_seconds=3.0,
                                batch_size=16, drop_remainder=True, seed=None, shuffle_buffer=1024, class_list=None,
                                audio_level_db=None):
    """Training batches from TFRecord shards with every step a TensorFlow op (no Python in the pipeline).

    The input pipeline of `make_tfrecord_dataset(training=True)` in graph form, for the tf.data service (whose
    workers run the serialised graph in other processes, where Python functions do not exist) and for
    `tf.distribute` file sharding. Same augmentation, the published one: the frame's short side resized to
    1.1 x `image_size` (bicubic, TensorFlow's kernel rather than PIL's), a random `image_size` crop and a
    horizontal flip with probability 0.5; the audio is the centred `clip_seconds` of the track (shorter tracks
    tiled), through the method's front-end. The frames were validated when the shards were written.

    Args:
        tfrecord_dir, split, frontend, image_size, clip_seconds, batch_size, drop_remainder, seed, shuffle_buffer,
            class_list, audio_level_db: as in `make_tfrecord_dataset`.

    Returns:
        `tf.data.Dataset` of `(x, y)`: x = {"image" [B, S, S, 3] ImageNet-normalised, "audio"}, y = {"label",
        "index"}; attributes `class_list` and `files`.
    """
    import tensorflow as tf

    from keras_avloc.data.audio import FRONTEND_SAMPLE_RATES
    from keras_avloc.data.augment import TRAIN_RESIZE_FACTOR
    from keras_avloc.io.imagenet import IMAGENET_MEAN, IMAGENET_STD

    files = sorted(glob.glob(os.path.join(tfrecord_dir, f"{split}-*-of-*.tfrecord")))
    if not files:
        raise FileNotFoundError(f"{tfrecord_dir}: no {split}-*-of-*.tfrecord shards; create them with "
                                f"`avloc data to-tfrecord ROOT {tfrecord_dir} --split {split}`")
    if isinstance(frontend, str) and FRONTEND_SAMPLE_RATES[frontend] != TFRECORD_SAMPLE_RATE:
        raise ValueError(f"TFRecord audio is stored at {TFRECORD_SAMPLE_RATE} Hz; front-end {frontend!r} "
                         f"needs {FRONTEND_SAMPLE_RATES[frontend]} Hz")
    if class_list is None:
        meta = meta_path(tfrecord_dir, split)
        class_list = []
        if os.path.exists(meta):
            with open(meta, encoding="utf-8") as handle:
                class_list = json.load(handle).get("class_list", [])
    size, length = int(image_size), int(round(TFRECORD_SAMPLE_RATE * float(clip_seconds)))
    short = int(size * TRAIN_RESIZE_FACTOR)
    names = tf.constant(list(class_list) or [""], tf.string)
    features = {"class": tf.io.FixedLenFeature([], tf.string, default_value=""),
                "index": tf.io.FixedLenFeature([], tf.int64), "image": tf.io.FixedLenFeature([], tf.string),
                "audio_pcm16": tf.io.FixedLenFeature([], tf.string)}
    mean, std = tf.constant(IMAGENET_MEAN, tf.float32), tf.constant(IMAGENET_STD, tf.float32)

    def decode(serialized):
        example = tf.io.parse_single_example(serialized, features)
        image = tf.io.decode_jpeg(example["image"], channels=3)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        # torchvision's Resize(int) sizes, as `_short_side`: the short side becomes `short`, the long one truncated.
        new_height = tf.where(width <= height, (short * height) // width, short)
        new_width = tf.where(width <= height, short, (short * width) // height)
        image = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_height, new_width]), method="bicubic",
                                antialias=True)
        image = tf.image.random_crop(tf.clip_by_value(tf.round(image), 0.0, 255.0), [size, size, 3])
        image = tf.where(tf.random.uniform([]) < 0.5, tf.reverse(image, axis=[1]), image)
        wave = tf.cast(tf.io.decode_raw(example["audio_pcm16"], tf.int16), tf.float32) / 32767.0
        total = tf.shape(wave)[0]
        wave = tf.tile(wave, [length // tf.maximum(total, 1) + 1])  # shorter tracks tiled (centre_clip)
        start = tf.maximum(total // 2 - length // 2, 0)
        wave = tf.clip_by_value(wave[start:start + length], -1.0, 1.0)
        label = tf.argmax(tf.cast(tf.equal(names, example["class"]), tf.int32), output_type=tf.int32)
        label = tf.where(tf.reduce_any(tf.equal(names, example["class"])) & (example["class"] != ""), label, -1)
        return {"image": tf.ensure_shape(image, [size, size, 3]), "wave": tf.ensure_shape(wave, [length]),
                "label": label, "index": tf.cast(example["index"], tf.int32)}

    levelled = with_level(frontend, audio_level_db)

    def finish(batch):
        image = (batch["image"] / 255.0 - mean) / std
        return {"image": image, "audio": levelled(batch["wave"])}, {"label": batch["label"], "index": batch["index"]}

    dataset = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    dataset = dataset.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    dataset.class_list = list(class_list)
    dataset.files = files
    return dataset
