"""Shared base for the audio-visual localisation models (LVS, EZ-VSL, AVGN and the methods built on them).

A model holds an image encoder (images [B, H, W, 3] -> raw feature maps [B, h, w, C]) and an audio
encoder (spectrograms [B, F, T, 1] -> raw vectors [B, C]). Subclasses build the encoders and implement
`compute_loss_terms`; the base supplies the cosine similarity map, `localize`, and the Keras 3
`train_step` / `test_step` so `model.fit` / `model.evaluate` work on `(x, y)` datasets whose x is
`{"image": ..., "audio": ...}`. Self-supervised methods ignore y; a method that needs labels or more
outputs overrides the one hook `compute_batch_terms(x, y, training)` (AVGN does), never the steps.

Class attributes a method sets (read by training, evaluation, the demo and the command line):
    frontend              audio front-end of `keras_avloc.data.make_dataset` ("lvs", "csol", "avsa")
    default_mix_sources   sources mixed into each training clip by default (0; AVGN: 2)
    needs_class_names     the constructor needs the dataset's class vocabulary (`class_names=`)
    display_name          name in result tables ("EZ-VSL")
    default_clip_seconds  training clip length when none is given (3.0; CSOL: 1.0)
    default_split         training split when none is given ("train"; CSOL stage two: "train_mosaic")
    needs_feature_pass    `train` also builds the training split in order, unaugmented, for `training_callbacks`
    init_from_method      the method whose trained model must initialise this one (`train(init_from=...)`)
    init_from_optional    `init_from_method` may initialise it but need not (IEr stage one from CSOL's)
    optimizer_options     extra `keras.optimizers.Adam` arguments ({}; DenseAV: epsilon, clipnorm)
    data_kind             "frames" (`keras_avloc.data.make_dataset`) or "sphere" (viewpoints of 360° clips,
                          `keras_avloc.data.sphere_dataset.make_sphere_dataset`; AVC / AVSA)
    draws_heatmaps        `train` draws the heatmaps of a fixed batch after each epoch (False for AVC / AVSA)
    default_image_size    training image (crop) side when none is given (224; AVC / AVSA: 112)
    next_stage            the registered method that continues this one (`avloc train --stage 2`; None)
    demo_recipe           its settings in `avloc demo`, chosen on val (`keras_avloc.demo`, docs/demo.md): "order" (its
                          place in the demo's runs and tables; frame methods without one are not in the demo), "default"
                          (in the default demo), "training" (`train` arguments; an "augment" may name one of the demo's
                          augmentation presets), "settings" (constructor arguments), "full_training" / "full_settings"
                          (the full preset's "training" / "settings", when they differ), "tiny_settings" (the smoke
                          preset's constructor arguments), "scored_stage" (a multi-stage method: the stage the demo
                          scores), "pointing_target" (its pointing-game target, when not the shared one),
                          "speech_standin" (its audio network starts from `avloc pretrain-audio`'s), "prompted" (also
                          scored on the sound and speech protocols) and "prompted_reference" (scored there beside a
                          "prompted" method when both run); a 360° method's "training", "settings" and "tiny_settings"
                          are read by the 360° demo (`keras_avloc.demo.sphere`), which trains it after its
                          `init_from_method`

The optional capabilities the plumbing asks for (multi-source, class-aware, multi-head, ...) are the protocols of
`keras_avloc.models.contract`.
"""

import numpy as np
import keras
from keras import ops

from keras_avloc.layers.replicas import global_batch, multi_worker, replica_count, replica_loss

from keras_avloc.models.losses_common import l2_normalize

__all__ = ["AVLocModel", "cosine_similarity_map", "objectness_map", "upsample_maps", "minmax_normalize"]


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
    spatial size, built with `dtype=self.dtype_policy`), and implement
    `compute_loss_terms(image_maps, audio_vecs) -> dict` with a "loss" entry plus the scalar diagnostics
    listed in `loss_term_names`. Their `get_config` extends the base's, so that
    `from_config(get_config())` rebuilds the model exactly (dtype policy and `eval_settings` included).

    Args:
        eval_settings: the input settings `avloc evaluate` / `avloc localize` use by default, saved with
            the model: {"image_size": int, "clip_seconds": float, "image_mode": "squash" | "crop",
            "strict_median": bool, "audio_level_db": float or None (`make_dataset`'s level normalisation)}.
            `avloc train` records the training sizes (and level) here; a ported official
            checkpoint records the official test settings. None: the defaults (224, 3.0, squash, False).
        **kwargs: passed to `keras.Model` (e.g. `name`, `dtype`).
    """

    loss_term_names = ("loss",)
    default_learning_rate = 1e-4
    upsample_align_corners = False
    frontend = "lvs"
    default_mix_sources = 0
    needs_class_names = False
    display_name = None
    default_clip_seconds = 3.0
    default_split = "train"
    needs_feature_pass = False
    init_from_method = None
    init_from_optional = False
    optimizer_options = {}
    data_kind = "frames"
    draws_heatmaps = True
    default_image_size = 224
    next_stage = None
    demo_recipe = {}
    tiny_config = None
    """Constructor arguments of the smallest model of the method (e.g. ResNet-18 at width 8): the conformance suite
    (`tests/test_conformance.py`) and the other tests that build every method use it. Every method sets it."""

    def __init__(self, eval_settings=None, **kwargs):
        super().__init__(**kwargs)
        self.eval_settings = normalize_eval_settings(eval_settings)
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

    def load_image_weights(self, path):
        """Loads a 2D ResNet-18 `.weights.h5` (the stand-in, ImageNet weights) into the image network (hook: AVC /
        AVSA inflate it into their video network); `avloc train --init-image-weights` calls it."""
        self.image_backbone.load_weights(path)

    def load_audio_weights(self, path):
        """Loads a `.weights.h5` of the audio network (e.g. DenseAV's spectrogram CNN from `avloc pretrain-audio`) into
        the audio backbone; `avloc train --init-audio-weights` calls it."""
        backbone = getattr(self, "audio_backbone", None)
        if backbone is None:
            raise ValueError(f"{type(self).__name__} has no audio backbone to load weights into")
        backbone.load_weights(path)

    def localization_encoders(self):
        """The (image, audio) encoders the maps come from (hook: SLAVC's momentum copies);
        `keras_avloc.perf.fast_inference_model` folds these."""
        return self.image_encoder, self.audio_encoder

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
        """`keras.Model.compile` with Adam(`default_learning_rate`, or the method's `learning_rate_schedule`, and its
        `optimizer_options`) as the default optimizer; no loss argument is needed (the method's loss is built in)."""
        if optimizer == "auto":
            schedule = self.learning_rate_schedule()
            optimizer = keras.optimizers.Adam(learning_rate=self.default_learning_rate if schedule is None else schedule,
                                              **self.optimizer_options)
        # XLA trains these models about 2x slower on CPU (measured), so it is opt-in rather than "auto".
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        # Creating the optimizer slots now, not inside the first traced step, avoids tracing that step twice
        # (the first `fit` step of LVS took 7.3 s instead of 3.3 s). The base `build` needs no input shape.
        if not self.built and type(self).build is AVLocModel.build:
            self.build()
        if self.built and self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)

    def compile_from_config(self, config):
        # Needed because `compile` is overridden: restores the saved optimizer when loading `.keras`.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras (TF backend, under a tf.distribute strategy) builds compiled metrics symbolically from the first
        # batch reduced with `strategy.reduce`, which MultiWorkerMirroredStrategy cannot do on a dict of
        # per-replica batches (TF 2.21: "Attempt to convert a value ({'image': PerReplica..."). These models
        # are built at construction and `compile` builds the optimizer, so there is nothing left to build.
        return None

    @property
    def metrics(self):
        return list(self.term_trackers.values())

    def compute_batch_terms(self, x, y, training):
        """The loss terms of one batch: the hook `train_step` and `test_step` call.

        The default encodes x and returns `compute_loss_terms(image_maps, audio_vecs)` (y is ignored:
        self-supervised). Methods that need labels or other outputs override this, not the steps.

        Args:
            x: {"image", "audio"} (or a 2-tuple); y: the dataset's targets (may be None);
            training: batch-norm / dropout mode.

        Returns:
            dict with a scalar "loss" and every name in `loss_term_names`.
        """
        images, audio = split_inputs(x)
        features = self.global_batch(self({"image": images, "audio": audio}, training=training))
        return self.compute_loss_terms(features["image_maps"], features["audio_vecs"])

    def global_batch(self, tree):
        """The per-clip tensors a loss reads, gathered from every replica (`keras_avloc.layers.replicas`).

        Every `compute_batch_terms` passes what its loss reads (features, labels, masks) through this just
        before the loss: under a `tf.distribute` strategy with N replicas the loss then sees the global batch,
        as one replica with N times the batch would; outside a strategy it returns `tree` unchanged. The
        distributed conformance test (tests/test_distribute.py) checks every registered method for it."""
        return global_batch(tree)

    def learning_rate_schedule(self, learning_rate=None):
        """The method's own learning-rate schedule (hook: DenseAV's two phases), or None for a constant rate
        (`learning_rate`, default `default_learning_rate`)."""
        return None

    def apply_gradients(self, gradients, variables):
        """The optimizer update of `train_step` (hook: DenseAV's two phases). A model with a non-zero
        `weight_decay` attribute (CSOL, AVC / AVSA) gets torch's coupled L2 decay (`Adam(weight_decay=...)`:
        gradient + decay * weight); variables without a gradient are left alone."""
        # Under N replicas the optimizer sums N copies of the decay term: each replica adds 1/N of it.
        decay = float(getattr(self, "weight_decay", 0.0) or 0.0) / replica_count()
        pairs = [(g + decay * ops.cast(v, g.dtype) if decay else g, v)
                 for g, v in zip(gradients, variables) if g is not None]
        if pairs:
            self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])

    def training_callbacks(self, dataset, feature_dataset, out_dir, seed=None):
        """Callbacks `keras_avloc.training.train` runs first at every epoch end, before the checkpoints (hook:
        CSOL's clustering). `feature_dataset` is the training split in order without augmentation when the
        class sets `needs_feature_pass`, else None."""
        return []

    def _update_trackers(self, terms, batch_size):
        for term, tracker in self.term_trackers.items():
            tracker.update_state(terms[term], sample_weight=batch_size)
        results = {term: tracker.result() for term, tracker in self.term_trackers.items()}
        if multi_worker():
            # Keras reduces a multi-worker step's outputs with strategy.reduce("MEAN", value, axis=0), which
            # fails on scalars (TF 2.21: "Invalid reduction dimension 0"); one-element vectors reduce to scalars.
            # Every replica holds the same values: the loss terms of the global batch.
            results = {term: ops.reshape(value, (1,)) for term, value in results.items()}
        return results

    def train_step(self, data):
        import tensorflow as tf

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.compute_batch_terms(x, y, training=True)
            loss = terms["loss"]
            if self.losses:
                loss = loss + ops.sum(self.losses)
            # Each replica holds the global batch's loss; the optimizer sums the replicas' gradients.
            scaled_loss = self.optimizer.scale_loss(replica_loss(loss))
        gradients = tape.gradient(scaled_loss, self.trainable_weights)
        self.apply_gradients(gradients, self.trainable_weights)
        batch_size = batch_weight(split_inputs(x)[0])
        return self._update_trackers(terms, batch_size)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        terms = self.compute_batch_terms(x, y, training=False)
        batch_size = batch_weight(split_inputs(x)[0])
        return self._update_trackers(terms, batch_size)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        images, audio = split_inputs(x)
        return self._localize_maps(images, audio, (images.shape[1], images.shape[2]))

    # ----------------------------------------------------------------- config
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "eval_settings": dict(self.eval_settings),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


DEFAULT_EVAL_SETTINGS = {"image_size": 224, "clip_seconds": 3.0, "image_mode": "squash", "strict_median": False,
                         "audio_level_db": None}


def normalize_eval_settings(settings):
    """`eval_settings` with every key filled in and checked (see `AVLocModel`)."""
    merged = dict(DEFAULT_EVAL_SETTINGS)
    unknown = set(settings or {}) - set(merged)
    if unknown:
        raise ValueError(f"eval_settings: unknown keys {sorted(unknown)}; allowed: {sorted(merged)}.")
    merged.update(settings or {})
    merged["image_size"] = int(merged["image_size"])
    merged["clip_seconds"] = float(merged["clip_seconds"])
    merged["strict_median"] = bool(merged["strict_median"])
    if merged["audio_level_db"] is not None:
        merged["audio_level_db"] = float(merged["audio_level_db"])
        if not -80.0 <= merged["audio_level_db"] <= 0.0:
            raise ValueError(f"eval_settings: audio_level_db must be between -80 and 0 dBFS, got "
                             f"{merged['audio_level_db']}.")
    if merged["image_size"] < 32 or merged["clip_seconds"] <= 0 or merged["image_mode"] not in ("squash", "crop"):
        raise ValueError(f"eval_settings {merged}: image_size must be >= 32, clip_seconds > 0 and image_mode "
                         "'squash' or 'crop'.")
    return merged


def as_keras_model(model, what):
    """A user-supplied network (an encoder, a featurizer) given as a Keras model or as its serialized config
    (how `get_config` stores it); `what` names it in the error ("AVGN image_encoder")."""
    if isinstance(model, dict):
        model = keras.saving.deserialize_keras_object(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} must be a keras.Model, got {type(model).__name__}.")
    return model


def objectness_map(feature_maps):
    """EZ-VSL's object saliency without audio: mean over channels of |features|, [B, h, w, C] -> [B, h, w].

    The objectness baseline of every results table and EZ-VSL's object-guided localisation (OGL) use this.
    """
    return ops.mean(ops.abs(ops.cast(feature_maps, "float32")), axis=-1)


def batch_weight(images):
    """Number of samples in a batch as a float32 tensor that depends on the data (use it as the tracker
    weight in custom train/test steps)."""
    # Computed from the data, not the static shape: with a static batch size the weight would be a
    # constant, and in graph mode its tracker update would run even on the final exhausted-iterator
    # call (the data-dependent ops are cancelled, the constant ones are not), skewing epoch means.
    first_values = ops.reshape(images, (ops.shape(images)[0], -1))[:, 0]  # any rank (sphere videos are 6-D)
    return ops.sum(ops.where(ops.isnan(first_values), 1.0, 1.0))


def images_and_audio(images, audio):
    """The model's input dict from two arrays."""
    return {"image": images, "audio": ops.convert_to_tensor(audio)}
