"""The shared machinery of the input pipelines: skipped-sample accounting, the sample loader (decoding, image
geometry, ground truth), and the tf.data graph around it.

`keras_avloc.data.dataset.make_dataset` (media folders) and `keras_avloc.data.tfrecord.make_tfrecord_dataset`
(TFRecord shards) both build on it, so neither imports the other's module for it.
"""

import logging
import os
import threading
import warnings

import numpy as np

from keras_avloc.data import annotations as annotations_lib
from keras_avloc.data import augment as augment_lib
from keras_avloc.io import media
from keras_avloc.io.imagenet import IMAGENET_MEAN, IMAGENET_STD
from keras_avloc.metrics.groundtruth import ground_truth_map

TRAIN_RESIZE_FACTOR = augment_lib.TRAIN_RESIZE_FACTOR

logger = logging.getLogger("keras_avloc.data.dataset")


# ---------------------------------------------------------------------------------------------------------
# Skipped-sample accounting


class SkipCounter:
    """Counts samples dropped under `on_error="skip"`; thread-safe. Available as `dataset.skipped`.

    Attributes:
        count: samples skipped since the dataset was built (all epochs).
        epoch_count: samples skipped in the current pass.
        reasons: `{file: reason}` for every skipped file (last reason wins).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0
        self.epoch_count = 0
        self.reasons = {}

    def note(self, file, reason):
        """Records why `file` failed (called by the parallel loaders)."""
        with self._lock:
            self.reasons[file] = reason

    def add(self, file=None, reason=None):
        """Counts one skipped sample (called in stream order, so each pass's count is exact)."""
        with self._lock:
            self.count += 1
            self.epoch_count += 1
            if file is not None:
                self.reasons[file] = reason

    def end_epoch(self):
        """Warns once per pass when samples were skipped, then resets `epoch_count`. Returns that count."""
        with self._lock:
            skipped, self.epoch_count = self.epoch_count, 0
        if skipped:
            examples = "; ".join(f"{reason}" for reason in list(self.reasons.values())[-3:])
            warnings.warn(
                f"keras_avloc.data: skipped {skipped} bad sample(s) in this pass ({self.count} in total), e.g. {examples}",
                RuntimeWarning,
                stacklevel=2,
            )
        return skipped

    def __int__(self):
        return self.count

    def __repr__(self):
        return f"SkipCounter(count={self.count})"


def SkipReport(counter):
    """A Keras callback logging the skipped-sample count into `logs["skipped"]` at the end of every epoch."""
    import keras

    class _SkipReport(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["skipped"] = float(counter.count)

    return _SkipReport()


# ---------------------------------------------------------------------------------------------------------
# Pure numpy sample preparation (shared by the folder reader and the TFRecord reader)


def _resize(image, width, height, resample, backend="pil"):
    from PIL import Image

    if backend == "cv2":
        import cv2

        if resample == Image.NEAREST:
            interpolation = cv2.INTER_NEAREST
        elif width < image.shape[1] and height < image.shape[0]:
            interpolation = cv2.INTER_AREA  # anti-aliased downscaling
        else:
            interpolation = cv2.INTER_CUBIC
        return cv2.resize(image, (width, height), interpolation=interpolation)
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


class _Geometry:
    """Optional source crop (RandomResizedCrop), resize to `resized`, crop `size` at (left, top), optional flip."""

    def __init__(self, width, height, size, mode, training, rng, train_crop="random", backend="pil"):
        self.size = size
        self.backend = backend
        self.source = None  # (x, y, w, h) region of the source image, or None for all of it
        self.width, self.height = width, height
        self.left = self.top = 0
        self.flip = False
        if training and train_crop == "resized":
            self.source = _random_resized_crop(width, height, rng)
            self.resized = (size, size)
            self.flip = bool(rng.random() < 0.5)
        elif training:
            if train_crop != "random":
                raise ValueError(f"train_crop must be 'random' or 'resized', got {train_crop!r}")
            self.resized = _short_side(width, height, int(size * TRAIN_RESIZE_FACTOR))
            self.left = int(rng.integers(0, self.resized[0] - size + 1))
            self.top = int(rng.integers(0, self.resized[1] - size + 1))
            self.flip = bool(rng.random() < 0.5)
        elif mode == "squash":
            self.resized = (size, size)
        elif mode == "crop":
            self.resized = _short_side(width, height, size)
            # torchvision CenterCrop rounding.
            self.left = int(round((self.resized[0] - size) / 2.0))
            self.top = int(round((self.resized[1] - size) / 2.0))
        else:
            raise ValueError(f"image_mode must be 'crop' or 'squash', got {mode!r}")

    def apply(self, array, resample):
        """Transforms a numpy [H, W, ...] array or a PIL image; returns numpy [size, size, ...]."""
        from PIL import Image

        if isinstance(array, Image.Image):  # stay in PIL until the resize: no extra array copies
            if self.source is not None:
                x, y, w, h = self.source
                array = array.crop((x, y, x + w, y + h))
            if array.size != self.resized:
                array = array.resize(self.resized, resample)
            array = np.asarray(array)
        else:
            if self.source is not None:
                x, y, w, h = self.source
                array = array[y : y + h, x : x + w]
            if (array.shape[1], array.shape[0]) != self.resized:
                array = _resize(np.ascontiguousarray(array), self.resized[0], self.resized[1], resample,
                                self.backend)
        array = array[self.top : self.top + self.size, self.left : self.left + self.size]
        return array[:, ::-1] if self.flip else array

    def boxes(self, boxes):
        """Normalised source corners -> normalised output corners (clipped to [0, 1])."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if boxes.shape[0] == 0:
            return boxes
        x = boxes[:, [0, 2]] * self.width
        y = boxes[:, [1, 3]] * self.height
        source = self.source or (0, 0, self.width, self.height)
        x = (x - source[0]) / source[2] * self.resized[0]
        y = (y - source[1]) / source[3] * self.resized[1]
        x = (x - self.left) / self.size
        y = (y - self.top) / self.size
        if self.flip:
            x = 1.0 - x[:, ::-1]
        return np.clip(np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1), 0.0, 1.0)


def _random_resized_crop(width, height, rng, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0)):
    """torchvision `RandomResizedCrop.get_params`: a region of random area and aspect ratio -> (x, y, w, h)."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        w = int(round(np.sqrt(target * aspect)))
        h = int(round(np.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _short_side(width, height, short):
    """torchvision `Resize(int)` output size: the short side becomes `short`, the long side is truncated."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _gt_map(geometry, boxes, mask_path, consensus):
    from PIL import Image

    size = geometry.size
    if mask_path is not None and not isinstance(mask_path, str):  # encoded PNG bytes (TFRecord input)
        mask = media.read_image(mask_path, name="mask")[..., 0]
    elif mask_path:
        mask = media.read_image(mask_path)[..., 0]
    else:
        mask = None
    if mask is not None:
        if mask.shape != (geometry.height, geometry.width):  # masks stored at another resolution
            mask = _resize(mask, geometry.width, geometry.height, Image.NEAREST, geometry.backend)
        return (geometry.apply(mask, Image.NEAREST) > 127).astype(np.float32)
    if boxes is None or len(boxes) == 0:
        return np.zeros([size, size], np.float32)
    return ground_truth_map("consensus" if consensus else "union", geometry.boxes(boxes), size=size)


class SampleLoader:
    """Loads one record into numpy arrays: uint8 image [S, S, 3], float32 wave, gt map(s), labels.

    Media come from the record's `image`/`audio` paths, falling back to the `video` mp4 (middle frame and its
    audio track through PyAV) when the jpg or wav is missing. `image_bytes`/`wave` may be given directly
    (TFRecord input).
    """

    def __init__(self, records, class_list, image_size=224, clip_seconds=3.0, sample_rate=16000,
                 image_mode="squash", training=False, mix_sources=0, train_crop="random", image_backend="pil",
                 with_ground_truth=True):
        self.records = records
        self.with_ground_truth = with_ground_truth
        self.image_backend = image_backend
        self.train_crop = train_crop
        self.class_index = {name: position for position, name in enumerate(class_list)}
        self.image_size = int(image_size)
        self.clip_seconds = float(clip_seconds)
        self.sample_rate = int(sample_rate)
        self.image_mode = image_mode
        self.training = training
        self.mix_sources = int(mix_sources)
        if self.mix_sources not in (0, 1, 2):
            raise ValueError(f"mix_sources must be 0 or 2, got {mix_sources}")
        self._by_class = {}
        for position, record in enumerate(records):
            self._by_class.setdefault(record.get("class", ""), []).append(position)

    def label(self, name):
        return self.class_index.get(name or "", -1)

    def image(self, record, image_bytes=None):
        if image_bytes is not None and len(image_bytes):
            return media.open_image(image_bytes, self.image_size, name=record["file"])
        path = record.get("image")
        if path and os.path.exists(path):
            if self.image_backend == "cv2":
                return media.read_image_cv2(path)
            return media.open_image(path, self.image_size)
        video = record.get("video")
        if video and os.path.exists(video):
            return media.middle_frame(video)
        raise media.MediaError(f"{path}: image file does not exist (nor does {video}); re-extract the clip")

    def wave(self, record):
        path = record.get("audio")
        video = record.get("audio_video") or record.get("video")  # a pair's audio comes from another clip
        if path and os.path.exists(path):
            source = path
        elif video and os.path.exists(video):
            source = video
        else:
            raise media.MediaError(f"{path}: audio file does not exist (nor does {video}); re-extract the clip")
        return media.read_audio(source, self.sample_rate, clip_seconds=self.clip_seconds)

    def partner(self, position, rng):
        """The record mixed with `position`: a different class; random when training, else the next one."""
        own = self.records[position].get("class", "")
        count = len(self.records)
        if self.training:
            for _ in range(16):
                other = int(rng.integers(0, count))
                if self.records[other].get("class", "") != own:
                    return other
        for step in range(1, count):
            other = (position + step) % count
            if self.records[other].get("class", "") != own:
                return other
        raise ValueError("mix_sources=2 needs at least two classes in the split")

    def load(self, position, seed=0, image_bytes=None, wave=None):
        """Returns a dict of numpy arrays for record `position` (raises MediaError on bad input)."""
        return self.load_record(self.records[position], position, seed, image_bytes, wave)

    def load_record(self, record, position, seed=0, image_bytes=None, wave=None):
        """As `load`, for a record given directly (e.g. parsed from a TFRecord)."""
        from PIL import Image

        rng = np.random.default_rng(seed)
        image = self.image(record, image_bytes)
        width, height = image.size if isinstance(image, Image.Image) else (image.shape[1], image.shape[0])
        geometry = _Geometry(width, height, self.image_size, self.image_mode, self.training, rng,
                             self.train_crop, self.image_backend)
        image = np.ascontiguousarray(geometry.apply(image, Image.BICUBIC))
        if wave is None:
            wave = self.wave(record)
        else:
            wave = media.centre_clip(wave, self.sample_rate, self.clip_seconds)
        consensus = record.get("gt") == "consensus"
        sample = {"image": image, "wave": wave, "label": np.int32(self.label(record.get("class"))),
                  "index": np.int32(position)}
        if self.with_ground_truth:
            sample["gt_map"] = np.ascontiguousarray(_gt_map(geometry, record.get("boxes"), record.get("mask"),
                                                            consensus))
        if self.mix_sources == 2:
            sources = record.get("sources") or []
            if len(sources) >= 2:  # an annotated mixture: its audio already holds both sources
                chosen = sources[:2]
            else:
                other = self.records[self.partner(position, rng)]
                sample["wave"] = (wave + self.wave(other)).astype(np.float32)
                chosen = [record, other]
            sample["labels"] = np.asarray([self.label(s.get("class")) for s in chosen], np.int32)
            if self.with_ground_truth:
                sample["gt_maps"] = np.stack(
                    [_gt_map(geometry, s.get("boxes"), s.get("mask"), consensus) for s in chosen]
                ).astype(np.float32)
        return sample


# ---------------------------------------------------------------------------------------------------------
# tf.data assembly


def _output_signature(loader):
    size, length = loader.image_size, int(round(loader.sample_rate * loader.clip_seconds))
    spec = [("image", "uint8", [size, size, 3]), ("wave", "float32", [length])]
    if loader.with_ground_truth:
        spec.append(("gt_map", "float32", [size, size]))
    spec += [("label", "int32", []), ("index", "int32", [])]
    if loader.mix_sources == 2:
        spec.append(("labels", "int32", [2]))
        if loader.with_ground_truth:
            spec.append(("gt_maps", "float32", [2, size, size]))
    return spec


def build_pipeline(tf, positions, loader, fetch, frontend, batch_size, on_error, skipped, drop_remainder,
                   training, shuffle, seed):
    """Shared assembly: `positions` is a dataset of element keys; `fetch(key, seed)` (a tf function) returns
    the per-sample tensors in `_output_signature` order plus an `ok` flag."""
    spec = _output_signature(loader)
    seeds = tf.data.Dataset.random(seed=seed).map(lambda value: value % (2**31 - 1))
    positions = tf.data.Dataset.zip((positions, seeds))
    samples = positions.map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    if on_error == "skip":
        index_position = [name for name, _, _ in spec].index("index")

        def keep(index, ok):
            if int(index) == -1:  # the sentinel closing a pass: every earlier sample has been loaded
                skipped.end_epoch()
                return np.bool_(False)
            if not ok:
                skipped.add()
            return np.bool_(ok)

        def report_end_of_pass(*values):
            kept = tf.numpy_function(keep, [values[index_position], values[-1]], tf.bool, stateful=True)
            return (*values[:-1], tf.ensure_shape(kept, []))

        samples = samples.map(report_end_of_pass).filter(lambda *values: values[-1])

    def to_dicts(*values):
        named = {name: value for (name, _, _), value in zip(spec, values)}
        for name, dtype, shape in spec:
            named[name] = tf.ensure_shape(named[name], shape)
        return named

    samples = samples.map(to_dicts)
    batches = samples.batch(batch_size, drop_remainder=drop_remainder)
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)

    def finish(batch):
        image = (tf.cast(batch["image"], tf.float32) / 255.0 - mean) / std
        x = {"image": image, "audio": frontend(batch["wave"])}
        y = {"label": batch["label"], "index": batch["index"]}
        if "gt_map" in batch:
            y["gt_map"] = batch["gt_map"]
        if "labels" in batch:
            y["labels"] = batch["labels"]
        if "gt_maps" in batch:
            y["gt_maps"] = batch["gt_maps"]
        return x, y

    return batches.map(finish, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _numpy_fetch(tf, loader, on_error, skipped, spec):
    """A tf-callable wrapping `loader.load` with error handling; returns (*tensors, ok)."""
    size, length = loader.image_size, int(round(loader.sample_rate * loader.clip_seconds))
    empty = {"image": np.zeros([size, size, 3], np.uint8), "wave": np.zeros([length], np.float32),
             "gt_map": np.zeros([size, size], np.float32), "label": np.int32(-1), "index": np.int32(-1),
             "labels": np.full([2], -1, np.int32), "gt_maps": np.zeros([2, size, size], np.float32)}
    media_error = media.MediaError

    def load(position, seed):
        position = int(position)
        if position < 0:  # end-of-pass sentinel
            return [empty[name] for name, _, _ in spec] + [np.bool_(True)]
        try:
            sample = loader.load(position, int(seed))
        except (media_error, annotations_lib.AnnotationError, OSError, ValueError, RuntimeError) as err:
            if on_error != "skip":
                raise
            skipped.note(loader.records[position]["file"], str(err))
            logger.warning("skipping %s: %s", loader.records[position]["file"], err)
            failed = dict(empty, index=np.int32(position))
            return [failed[name] for name, _, _ in spec] + [np.bool_(False)]
        return [sample[name] for name, _, _ in spec] + [np.bool_(True)]

    dtypes = [getattr(tf, dtype) for _, dtype, _ in spec] + [tf.bool]

    def fetch(position, seed):
        return tuple(tf.numpy_function(load, [position, seed], dtypes, stateful=True))

    return fetch
