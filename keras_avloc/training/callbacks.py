"""Training callbacks: atomic `.keras` checkpoints, heatmap images for TensorBoard, a training-state file."""

import os

import numpy as np
import keras

from keras_avloc.io.files import atomic_output, write_json
from keras_avloc.io.imagenet import denormalize_images
from keras_avloc.models.contract import ClassAware


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (`model.save`) to `filepath` after every epoch through a temporary file that
    is renamed into place, so a kill during saving never leaves a truncated model file.

    Args:
        filepath: final `.keras` path.
    """

    def __init__(self, filepath):
        super().__init__()
        self.filepath = os.fspath(filepath)

    def on_epoch_end(self, epoch, logs=None):
        with atomic_output(self.filepath, suffix=".keras") as temporary:
            self.model.save(temporary)


class TrainingState(keras.callbacks.Callback):
    """Records the completed epoch count in `path` (JSON) after every epoch, so re-running a finished
    training can say so instead of starting over, and a resumed run can check its settings.

    Args:
        path: JSON file to write.
        extra: additional fields stored with the state (e.g. {"settings": ...}).
        initial_epochs: epochs completed before this run (for the state written at the start).
    """

    def __init__(self, path, extra=None, initial_epochs=0):
        super().__init__()
        self.path = path
        self.extra = dict(extra or {})
        self.completed = int(initial_epochs)

    def write(self, logs=None):
        payload = dict(self.extra)
        payload["completed_epochs"] = self.completed
        if logs is not None:
            payload["last_logs"] = {key: float(value) for key, value in logs.items()}
        write_json(self.path, payload, indent=2, sort_keys=True)

    def on_epoch_end(self, epoch, logs=None):
        self.completed = int(epoch) + 1
        self.write(logs or {})


def tensorboard_available():
    """True when the `tensorboard` package (needed by `tf.summary` and `keras.callbacks.TensorBoard`) is installed."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


class HeatmapImages(keras.callbacks.Callback):
    """Draws heatmap overlays of a fixed batch at the end of every `every` epochs.

    Writes `image_dir/epoch_NNN.png` (the overlays side by side) and, when TensorBoard is installed, the
    same overlays to `log_dir/heatmaps` (TensorBoard's Images tab). A model with `localize_classes` (CSOL
    stage two) also gets `classes_epoch_NNN.png` and the "class_maps" images: every class in its own colour.

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

        from keras_avloc.viz.figures import overlay_heatmap

        heatmaps = self.model.localize(self.images, self.audio)
        overlays = np.stack([overlay_heatmap(image, heatmap)
                             for image, heatmap in zip(denormalize_images(self.images), heatmaps)])
        path = os.path.join(self.image_dir, f"epoch_{epoch + 1:03d}.png")
        with atomic_output(path, suffix=".png") as temporary:
            cv2.imwrite(temporary, np.concatenate(list(overlays), axis=1)[..., ::-1])
        class_overlays = None
        if isinstance(self.model, ClassAware):  # class-aware methods (CSOL): every class in its own colour
            from keras_avloc.viz.figures import class_colour_overlay

            class_maps = self.model.localize_classes(self.images, self.audio)
            class_overlays = np.stack([class_colour_overlay(image, maps) for image, maps in
                                       zip(denormalize_images(self.images), class_maps)])
            path = os.path.join(self.image_dir, f"classes_epoch_{epoch + 1:03d}.png")
            with atomic_output(path, suffix=".png") as temporary:
                cv2.imwrite(temporary, np.concatenate(list(class_overlays), axis=1)[..., ::-1])
        if self.log_dir is not None:
            import tensorflow as tf

            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.image("heatmaps", overlays, step=epoch, max_outputs=len(overlays))
                if class_overlays is not None:
                    tf.summary.image("class_maps", class_overlays, step=epoch, max_outputs=len(class_overlays))
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
