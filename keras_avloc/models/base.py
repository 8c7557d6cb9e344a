"""Shared base for the audio-visual localisation models (LVS, EZ-VSL, and methods built on them).

A model holds an image encoder (images [B, H, W, 3] -> raw feature maps [B, h, w, C]) and an audio
encoder (spectrograms [B, F, T, 1] -> raw vectors [B, C]). Subclasses build the encoders and
implement `compute_loss_terms`; the base supplies the cosine similarity map, `localize`, and the
Keras 3 `train_step` / `test_step` so `model.fit` / `model.evaluate` work on `(x, y)` datasets whose
x is `{"image": ..., "audio": ...}` (y is ignored: the methods are self-supervised).
"""

import numpy as np
import keras
from keras import ops

from keras_avloc.models.losses_common import l2_normalize


def cosine_similarity_map(image_maps, audio_vecs):
    """Cosine similarity of each clip's audio vector with every location of its own image map.

    Args:
        image_maps: float tensor [B, h, w, C] (raw, normalised here along C).
        audio_vecs: float tensor [B, C] (raw, normalised here).

    Returns:
        float32 tensor [B, h, w] with values in [-1, 1].
    """
    image_maps = l2_normalize(image_maps, axis=-1)
    audio_vecs = l2_normalize(audio_vecs, axis=-1)
    return ops.einsum("bhwc,bc->bhw", image_maps, audio_vecs)


def _align_corners_matrix(in_size, out_size):
    """[out, in] bilinear interpolation weights with align_corners=True (PyTorch convention)."""
    if out_size == 1 or in_size == 1:
        coords = np.zeros([out_size])
    else:
        coords = np.arange(out_size) * (in_size - 1) / (out_size - 1)
    low = np.clip(np.floor(coords).astype(int), 0, in_size - 1)
    high = np.clip(low + 1, 0, in_size - 1)
    frac = coords - low
    weights = np.zeros([out_size, in_size], np.float32)
    weights[np.arange(out_size), low] += 1.0 - frac
    weights[np.arange(out_size), high] += frac
    return weights


def upsample_maps(maps, size, align_corners=False):
    """Bilinearly resizes maps [B, h, w] to [B, size[0], size[1]].

    Args:
        maps: float tensor [B, h, w]; h and w must be known when `align_corners=True`.
        size: (height, width) of the output.
        align_corners: False = half-pixel centres (`cv2.resize` INTER_LINEAR, used by the LVS
            evaluation); True = PyTorch `interpolate(..., align_corners=True)` (EZ-VSL evaluation).

    Returns:
        float32 tensor [B, size[0], size[1]].
    """
    maps = ops.cast(maps, "float32")
    if align_corners:
        rows = _align_corners_matrix(int(maps.shape[1]), int(size[0]))
        cols = _align_corners_matrix(int(maps.shape[2]), int(size[1]))
        return ops.einsum("oh,bhw,pw->bop", rows, maps, cols)
    resized = ops.image.resize(maps[..., None], (int(size[0]), int(size[1])), interpolation="bilinear", antialias=False)
    return resized[..., 0]


def minmax_normalize(maps, epsilon=1e-12):
    """Per-sample min-max normalisation of maps [B, H, W] to [0, 1] (as the official evaluations do)."""
    lowest = ops.min(maps, axis=(1, 2), keepdims=True)
    highest = ops.max(maps, axis=(1, 2), keepdims=True)
    return (maps - lowest) / ops.maximum(highest - lowest, epsilon)


def split_inputs(x):
    """Returns (images, audio) from a dict {"image", "audio"} or a 2-tuple."""
    if isinstance(x, dict):
        missing = {"image", "audio"} - set(x)
        if missing:
            raise ValueError(
                f"model inputs need the keys 'image' and 'audio' (missing {sorted(missing)}); "
                "build datasets with keras_avloc.data.make_dataset or pass {'image': ..., 'audio': ...}."
            )
        return x["image"], x["audio"]
    if isinstance(x, (tuple, list)) and len(x) == 2:
        return x[0], x[1]
    raise ValueError("model inputs must be {'image': [B,H,W,3], 'audio': [B,F,T,1]} or (images, audio).")


@keras.saving.register_keras_serializable(package="keras_avloc")
class AVLocModel(keras.Model):
    """Base class: two encoders, cosine similarity maps, `localize`, and fit/evaluate steps.

    Subclasses must, in `__init__` after calling `super().__init__(**kwargs)`, set
    `self.image_backbone`, `self.image_encoder` and `self.audio_encoder` (Keras models accepting any
    spatial size), and implement `compute_loss_terms(image_maps, audio_vecs) -> dict` with a "loss"
    entry plus the scalar diagnostics listed in `loss_term_names`.

    Args:
        **kwargs: passed to `keras.Model` (e.g. `name`).
    """

    loss_term_names = ("loss",)
    default_learning_rate = 1e-4
    upsample_align_corners = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.term_trackers = {term: keras.metrics.Mean(name=term) for term in self.loss_term_names}

    # ----------------------------------------------------------------- features
    def build(self, input_shape=None):
        # The encoders are functional models built at construction; nothing is shape dependent.
        self.built = True

    def encode_image(self, images, training=False):
        """Raw (un-normalised) image feature maps [B, h, w, C]."""
        return self.image_encoder(images, training=training)

    def encode_audio(self, audio, training=False):
        """Raw (un-normalised) audio vectors [B, C]."""
        return self.audio_encoder(audio, training=training)

    def call(self, inputs, training=False):
        """Encodes a batch.

        Args:
            inputs: {"image": [B, H, W, 3], "audio": [B, F, T, 1]} or (images, audio).
            training: batch-norm mode.

        Returns:
            dict with "image_maps" [B, h, w, C] and "audio_vecs" [B, C] (raw features).
        """
        images, audio = split_inputs(inputs)
        return {
            "image_maps": self.encode_image(images, training=training),
            "audio_vecs": self.encode_audio(audio, training=training),
        }

    def similarity_map(self, image_maps, audio_vecs):
        """Matched-pair cosine similarity map [B, h, w] (features L2-normalised inside)."""
        return cosine_similarity_map(image_maps, audio_vecs)

    def compute_loss_terms(self, image_maps, audio_vecs):
        """Returns {"loss": scalar, <term>: scalar, ...}; implemented by each method."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss_terms")

    def localize(self, images, audio, image_size=None):
        """Sound-source heatmaps at image resolution.

        Args:
            images: float [B, H, W, 3], ImageNet-normalised.
            audio: float [B, F, T, 1] spectrograms.
            image_size: (H, W) of the output; defaults to the input image size.

        Returns:
            numpy float32 [B, H, W]: the matched-pair cosine similarity map upsampled bilinearly
            (raw cosine values; evaluation code min-max normalises per sample).

        Example:
        >>> heatmaps = model.localize(x["image"], x["audio"])  # doctest: +SKIP
        """
        images = ops.convert_to_tensor(images)
        size = tuple(int(side) for side in (image_size or (images.shape[1], images.shape[2])))
        return ops.convert_to_numpy(self._localize_graph()(images, ops.convert_to_tensor(audio), size))

    def _localize_maps(self, images, audio, size):
        features = self(images_and_audio(images, audio), training=False)
        maps = self.similarity_map(features["image_maps"], features["audio_vecs"])
        return upsample_maps(maps, size, align_corners=self.upsample_align_corners)

    def _localize_graph(self):
        """`_localize_maps` as one compiled graph (traced once per input shape and output size); eager
        execution of the two ResNets is markedly slower. Reads the live weights, so training or
        loading weights later is seen."""
        graph = self.__dict__.get("_compiled_localize")
        if graph is None:
            if keras.backend.backend() != "tensorflow":
                return self._localize_maps
            import tensorflow as tf

            graph = tf.function(self._localize_maps)
            # Stored outside Keras' attribute tracking: it is a cache, not part of the model's state.
            object.__setattr__(self, "_compiled_localize", graph)
        return graph

    # ----------------------------------------------------------------- training
    def compile(self, optimizer="auto", **kwargs):
        """`keras.Model.compile` with Adam(`default_learning_rate`) as the default optimizer; no loss
        argument is needed (the method's loss is built in)."""
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(learning_rate=self.default_learning_rate)
        # XLA trains these models about 2x slower on CPU (measured), so it is opt-in rather than "auto".
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        # Creating the optimizer slots now, not inside the first traced step, avoids tracing that step twice.
        if self.built and self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        # Needed because `compile` is overridden: restores the saved optimizer when loading `.keras`.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        return list(self.term_trackers.values())

    def _loss_terms_for_batch(self, x, training):
        images, audio = split_inputs(x)
        features = self({"image": images, "audio": audio}, training=training)
        return self.compute_loss_terms(features["image_maps"], features["audio_vecs"])

    def _update_trackers(self, terms, batch_size):
        for term, tracker in self.term_trackers.items():
            tracker.update_state(terms[term], sample_weight=batch_size)
        return {term: tracker.result() for term, tracker in self.term_trackers.items()}

    def train_step(self, data):
        import tensorflow as tf

        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self._loss_terms_for_batch(x, training=True)
            loss = terms["loss"]
            if self.losses:
                loss = loss + ops.sum(self.losses)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        batch_size = batch_weight(split_inputs(x)[0])
        return self._update_trackers(terms, batch_size)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        terms = self._loss_terms_for_batch(x, training=False)
        batch_size = batch_weight(split_inputs(x)[0])
        return self._update_trackers(terms, batch_size)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        images, audio = split_inputs(x)
        features = self({"image": images, "audio": audio}, training=False)
        maps = self.similarity_map(features["image_maps"], features["audio_vecs"])
        return upsample_maps(maps, (images.shape[1], images.shape[2]), align_corners=self.upsample_align_corners)

    # ----------------------------------------------------------------- config
    def get_config(self):
        return {"name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def batch_weight(images):
    """Number of samples in a batch as a float32 tensor that depends on the data (use it as the tracker
    weight in custom train/test steps)."""
    # Computed from the data, not the static shape: with a static batch size the weight would be a
    # constant, and in graph mode its tracker update would run even on the final exhausted-iterator
    # call (the data-dependent ops are cancelled, the constant ones are not), skewing epoch means.
    first_values = images[:, 0, 0, 0]
    return ops.sum(ops.where(ops.isnan(first_values), 1.0, 1.0))


def images_and_audio(images, audio):
    """The model's input dict from two arrays."""
    return {"image": images, "audio": ops.convert_to_tensor(audio)}
