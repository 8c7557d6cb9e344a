"""Training callbacks: atomic `.keras` checkpoints, heatmap images for TensorBoard, a training-state file."""

import json
import os

import numpy as np
import keras

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def denormalize_images(images):
    """ImageNet-normalised float [B, H, W, 3] -> uint8 RGB [B, H, W, 3]."""
    rgb = np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def heatmap_overlays(images_uint8, heatmaps, alpha=0.5):
    """Per-sample min-max normalised jet heatmaps blended on the images: uint8 [B, H, W, 3]."""
    import matplotlib

    maps = np.asarray(heatmaps, np.float32)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    maps = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.0)
    coloured = matplotlib.colormaps["jet"](maps)[..., :3] * 255.0
    blended = (1 - alpha) * images_uint8.astype(np.float32) + alpha * coloured
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def write_json_atomic(path, payload):
    """Writes JSON to `path` through a temporary file and `os.replace`."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`ModelCheckpoint` that writes to a temporary `.keras` file and renames it over `filepath`, so a
    kill during saving never leaves a truncated model file.

    Args:
        filepath: final `.keras` path (no format placeholders).
        **kwargs: passed to `keras.callbacks.ModelCheckpoint`.
    """

    def __init__(self, filepath, **kwargs):
        self.final_path = os.fspath(filepath)
        directory, base = os.path.split(self.final_path)
        self.partial_path = os.path.join(directory, f".partial-{base}")
        super().__init__(self.partial_path, **kwargs)

    def _publish(self):
        if os.path.exists(self.partial_path):
            os.replace(self.partial_path, self.final_path)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self._publish()

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        self._publish()


class TrainingState(keras.callbacks.Callback):
    """Records the completed epoch count in `path` (JSON) after every epoch, so re-running a finished
    training can say so instead of starting over.

    Args:
        path: JSON file to write.
        extra: additional fields stored with the state (e.g. the training arguments).
    """

    def __init__(self, path, extra=None):
        super().__init__()
        self.path = path
        self.extra = dict(extra or {})

    def on_epoch_end(self, epoch, logs=None):
        payload = dict(self.extra)
        payload["completed_epochs"] = int(epoch) + 1
        payload["last_logs"] = {key: float(value) for key, value in (logs or {}).items()}
        write_json_atomic(self.path, payload)


def tensorboard_available():
    """True when the `tensorboard` package (needed by `tf.summary` and `keras.callbacks.TensorBoard`) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class HeatmapImages(keras.callbacks.Callback):
    """Draws heatmap overlays of a fixed batch at the end of every `every` epochs.

    Writes `image_dir/epoch_NNN.png` (the overlays side by side) and, when TensorBoard is installed, the
    same overlays to `log_dir/heatmaps` (TensorBoard's Images tab).

    Args:
        image_dir: folder for the PNG strips.
        images: ImageNet-normalised float [N, H, W, 3] (a fixed validation batch).
        audio: matching spectrograms [N, F, T, 1].
        log_dir: TensorBoard log folder, or None.
        max_images: how many samples to show.
        every: draw every this many epochs.
    """

    def __init__(self, image_dir, images, audio, log_dir=None, max_images=4, every=1):
        super().__init__()
        self.image_dir = image_dir
        self.log_dir = os.path.join(log_dir, "heatmaps") if log_dir and tensorboard_available() else None
        self.images = np.asarray(images)[:max_images]
        self.audio = np.asarray(audio)[:max_images]
        self.every = max(1, int(every))
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        import cv2

        heatmaps = self.model.localize(self.images, self.audio)
        overlays = heatmap_overlays(denormalize_images(self.images), heatmaps)
        os.makedirs(self.image_dir, exist_ok=True)
        path = os.path.join(self.image_dir, f"epoch_{epoch + 1:03d}.png")
        tmp = os.path.join(self.image_dir, f".tmp-{os.getpid()}.png")
        cv2.imwrite(tmp, np.concatenate(list(overlays), axis=1)[..., ::-1])
        os.replace(tmp, path)
        if self.log_dir is not None:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.image("heatmaps", overlays, step=epoch, max_outputs=len(overlays))
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
