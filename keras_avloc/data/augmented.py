"""The augmented training pipeline: base samples (decoded once with `cache=True`, or streamed) plus in-graph
augmentation (`keras_avloc.data.augment`).

A base sample is the frame resized to int(1.1 S) on its short side and centre-cropped to a square (the
published training crop is taken inside it), and the centred `clip * (1 + speed) + 2 * time_shift` seconds
of audio. `make_dataset(training=True)` uses this pipeline when `cache=True` or when `augment` is not the
official augmentation; otherwise it keeps the published streaming pipeline (`keras_avloc.data.dataset`).

Differences from the streaming pipeline, all deliberate: frames wider than square lose their sides (the
streaming crop can reach them), and two-source mixtures (`mix_sources=2`) take the second source from the
same batch (a clip of another class) rather than from the whole split.
"""

import concurrent.futures
import os

import numpy as np

from keras_avloc.data import augment as augment_lib
from keras_avloc.io import media
from keras_avloc.io.imagenet import IMAGENET_MEAN, IMAGENET_STD

CACHE_LIMIT_BYTES = 4 * 1024**3
"""`cache=True` refuses datasets whose decoded samples would take more memory than this."""


def base_sizes(image_size, clip_seconds, augmentation, sample_rate):
    """(base image side, base wave seconds, clip samples) of the augmented pipeline."""
    side = int(augment_lib.TRAIN_RESIZE_FACTOR * image_size)  # the published int(1.1 * S)
    wave_seconds = clip_seconds * (1.0 + augmentation.speed) + 2.0 * augmentation.time_shift
    return side, wave_seconds, int(round(sample_rate * clip_seconds))


def _decode_all(loader, records, skipped, progress, on_error="skip", workers=None):
    """Decodes every record into base samples (threads: PIL, libsndfile and FFmpeg release the GIL).

    A record that cannot be decoded is skipped and counted, or raises its error when `on_error` is not "skip"."""
    from tqdm.auto import tqdm

    side = loader.image_size
    length = int(round(loader.sample_rate * loader.clip_seconds))
    estimate = len(records) * (side * side * 3 + 2 * length)
    if estimate > CACHE_LIMIT_BYTES:
        raise ValueError(f"cache=True would hold {estimate / 1024**3:.1f} GB of decoded samples (more than "
                         f"{CACHE_LIMIT_BYTES / 1024**3:.0f} GB); train without --cache, or pack the split into "
                         "TFRecords (`avloc data to-tfrecord`).")

    def decode(position):
        try:
            return position, loader.load(position), None
        except (media.MediaError, OSError, ValueError, RuntimeError) as err:
            return position, None, err

    images = np.zeros((len(records), side, side, 3), np.uint8)
    waves = np.zeros((len(records), length), np.int16)
    labels = np.full((len(records), 2), -1, np.int32)
    keep = np.zeros(len(records), bool)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 1)) as pool:
        results = pool.map(decode, range(len(records)))
        for position, sample, error in tqdm(results, total=len(records), desc="caching samples", unit="clip",
                                            disable=not progress, leave=False):
            if error is not None:
                if on_error != "skip":
                    raise error
                skipped.add(records[position]["file"], str(error))
                continue
            images[position] = sample["image"]
            waves[position] = np.round(np.clip(sample["wave"], -1, 1) * 32767).astype(np.int16)
            labels[position] = _source_labels(loader, records[position], sample)
            keep[position] = True
    if skipped.count:
        skipped.end_epoch()
    return images[keep], waves[keep], labels[keep], np.nonzero(keep)[0].astype(np.int32)


def _source_labels(loader, record, sample):
    """[label, second label] of a base sample; the second is -1 unless the record is an annotated mixture."""
    sources = record.get("sources") or []
    if len(sources) >= 2:
        return [loader.label(sources[0].get("class")), loader.label(sources[1].get("class"))]
    return [int(sample["label"]), -1]


def make_augmented_dataset(loader_class, records, class_list, image_size, clip_seconds, sample_rate, frontend,
                           batch_size, augmentation, mix_sources, cache, seed, drop_remainder, repeat, on_error,
                           skipped, progress=True, image_backend="pil", frequency_axis=1):
    """The training `tf.data.Dataset` of `(x, y)` batches with in-graph augmentation (see the module docstring).

    y holds "label" [B], "index" [B] and, with `mix_sources=2`, "labels" [B, 2]."""
    import tensorflow as tf

    side, wave_seconds, length = base_sizes(image_size, clip_seconds, augmentation, sample_rate)
    loader = loader_class(records, class_list, side, wave_seconds, sample_rate, image_mode="crop", training=False,
                          mix_sources=0, image_backend=image_backend, with_ground_truth=False)
    base_length = int(round(sample_rate * wave_seconds))
    if cache:
        images, waves, labels, indices = _decode_all(loader, records, skipped, progress, on_error)
        if not len(indices):
            raise ValueError("no sample of the split could be decoded; see the reasons above")
        count = len(indices)
        base = tf.data.Dataset.from_tensor_slices((images, waves, labels, indices))
        base = base.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    else:
        def load(position):
            position = int(position)
            try:
                sample = loader.load(position)
            except (media.MediaError, OSError, ValueError, RuntimeError) as err:
                if on_error != "skip":
                    raise
                skipped.add(records[position]["file"], str(err))
                return (np.zeros((side, side, 3), np.uint8), np.zeros(base_length, np.int16),
                        np.full(2, -1, np.int32), np.int32(-1))
            wave = np.round(np.clip(sample["wave"], -1, 1) * 32767).astype(np.int16)
            return (sample["image"], wave, np.asarray(_source_labels(loader, records[position], sample), np.int32),
                    np.int32(position))

        def fetch(position):
            values = tf.numpy_function(load, [position], [tf.uint8, tf.int16, tf.int32, tf.int32], stateful=True)
            return (tf.ensure_shape(values[0], [side, side, 3]), tf.ensure_shape(values[1], [base_length]),
                    tf.ensure_shape(values[2], [2]), tf.ensure_shape(values[3], []))

        count = len(records)
        base = tf.data.Dataset.range(count).shuffle(count, seed=seed, reshuffle_each_iteration=True)
        base = base.map(fetch, num_parallel_calls=tf.data.AUTOTUNE).filter(
            lambda image, wave, labels, index: index >= 0)
    if repeat:
        base = base.repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def per_sample(sample, seed_pair):
        image, wave, labels, index = sample
        seed_pair = tf.cast(seed_pair % (2**31 - 1), tf.int32)
        image_seed, colour_seed, audio_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 3))
        image = augment_lib.crop_and_flip(tf, tf.cast(image, tf.float32), image_size, augmentation, image_seed)
        image = augment_lib.colour_and_blur(tf, image, augmentation, colour_seed)
        clip = augment_lib.audio_clip(tf, tf.cast(wave, tf.float32) / 32767.0, length, augmentation, sample_rate,
                                      audio_seed)
        return {"image": image, "wave": clip, "labels": labels, "index": index}

    samples = tf.data.Dataset.zip((base, seeds)).map(per_sample, num_parallel_calls=tf.data.AUTOTUNE)
    batches = samples.batch(batch_size, drop_remainder=drop_remainder)
    mean, std = tf.constant(IMAGENET_MEAN), tf.constant(IMAGENET_STD)
    batch_seeds = tf.data.Dataset.random(seed=None if seed is None else seed + 1).batch(2)

    def finish(batch, seed_pair):
        seed_pair = tf.cast(seed_pair % (2**31 - 1), tf.int32)
        mix_seed, mask_seed, ambience_seed = tf.unstack(tf.random.experimental.stateless_split(seed_pair, 3))
        wave, labels = augment_lib.add_ambience(tf, batch["wave"], augmentation, ambience_seed), batch["labels"]
        if mix_sources == 2:
            wave, labels = mix_in_batch(tf, wave, labels, mix_seed)
        spectrograms = augment_lib.mask_spectrograms(tf, frontend(wave), augmentation, mask_seed, frequency_axis)
        x = {"image": (batch["image"] / 255.0 - mean) / std, "audio": spectrograms}
        y = {"label": labels[:, 0], "index": batch["index"]}
        if mix_sources == 2:
            y["labels"] = labels
        return x, y

    dataset = tf.data.Dataset.zip((batches, batch_seeds)).map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    if not cache:
        return dataset.prefetch(tf.data.AUTOTUNE), count
    # From memory, the in-graph augmentation costs ~20 ms a batch against a 100-400 ms training step. tf.data's
    # autotuner still grows its thread pools now and then, and on a small machine those threads take cores from
    # the training step: on 2 cores, one AVGN epoch in three took 410 instead of 235 ms/step (the demo's
    # settings). Fixed parallelism (one thread per core) keeps every epoch at the fast rate.
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options), count


def mix_in_batch(tf, waves, labels, seed):
    """Two-source mixtures within a batch: every clip that is not already a mixture gets the audio of a random
    clip of another class from the same batch added (its label becomes the second source).

    Args:
        waves: [B, T]; labels: int [B, 2] (second column -1 unless an annotated mixture); seed: [2] int32.

    Returns:
        (mixed waves [B, T], labels [B, 2]).
    """
    first = labels[:, 0]
    eligible = tf.not_equal(first[:, None], first[None, :]) & (labels[None, :, 1] < 0)  # partner j for row i
    scores = tf.random.stateless_uniform(tf.shape(eligible), seed) + tf.cast(eligible, tf.float32)
    partner = tf.argmax(scores, axis=1, output_type=tf.int32)
    found = tf.reduce_any(eligible, axis=1) & (labels[:, 1] < 0)
    mixed = tf.where(found[:, None], waves + tf.gather(waves, partner), waves)
    second = tf.where(found, tf.gather(first, partner), labels[:, 1])
    return mixed, tf.stack([first, second], axis=1)
