"""SLAVC (Mo & Morgado, "A Closer Look at Weakly-Supervised Audio-Visual Source Localization", NeurIPS 2022): two
projection pairs, one for correspondence and one for localisation, trained against momentum targets, with heavy
dropout on the image features.

Follows the official code (stoneMo/SLAVC, `model.py` class `SLAVC`; `train.py` and `scripts/train_vggsound144k.sh`
for the settings; `test.py` for the map):

* image: ResNet-18 (layer4 stride 2) -> dropout 0.9 (training) -> two 1 x 1 convolutions `img_proj1`, `img_proj2`;
  audio: ResNet-18 on the spectrogram, global max pool -> dropout (0) -> two linear layers `aud_proj1`, `aud_proj2`;
  every output L2-normalised along its channels (here the two heads are concatenated: [B, h, w, 2D] and [B, 2D]);
* momentum copies of both networks and all four projections, updated before every training step as
  p_m <- m p_m + (1 - m) p (parameters only; the copies' batch norms keep their own running statistics and run on
  the batch, as torch's train mode does), m = 0.999 (the training script's; `train.py`'s default is 0.9); their
  outputs are targets (no gradient);
* with s_k(x, y)[n, m, p] = <x_k[n, p], y_k[m]> / tau (tau = 0.03, p over the h x w locations, k = 1, 2 the head):
  i2a[n, m] = log sum_p softmax_m(s_1(v, a_bar))[n, m, p] * softmax_p(s_2(v, a_bar))[n, m, p];
  a2i[n, m] = the same with (v_bar, a): the momentum image features against the trained audio;
  loss = CE(a2i, diag) + CE(i2a, diag) (each row an image classifying the batch's audio);
* localisation: (S_1 + S_2) / 2 with S_k[n] = <v_k[n, p], a_k[n]> (the base encoders, as `test.py`; the momentum ones
  with `localize_with="momentum"`), upsampled with align_corners=True;
* optimiser: Adam, lr 1e-4, no weight decay; the script's batch is 128.

Official bugs and oddities not reproduced: i2a and a2i are computed as log(sum of products of softmaxes), which gives
log(0) when every product underflows at tau = 0.03; here they are the same quantity as a log-sum-exp of
log-softmaxes (equal where the official value is finite). The test maps' fixed-bound normalisation and bicubic
upsampling belong to its evaluation script (this project's evaluators normalise per map). Kept because they define
the method: "a2i" takes its softmax over the audio axis too (both terms classify audio for each image; they differ
in which side is the momentum target), and the momentum branch applies its own dropout.
"""

import keras
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.models.base import AVLocModel, cosine_similarity_map, split_inputs, upsample_maps
from keras_avloc.models.losses_common import cross_entropy_with_integer_targets, l2_normalize

METHODS = {"slavc": "SLAVC"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["SLAVC", "slavc_loss_terms"]


def _heads(x):
    """The two heads of concatenated features [..., 2D], each L2-normalised along its D channels."""
    first, second = ops.split(ops.cast(x, "float32"), 2, axis=-1)
    return l2_normalize(first, axis=-1), l2_normalize(second, axis=-1)


def _log_localised_correspondence(image_maps, audio_vecs, tau):
    """log sum_p softmax_m(s_1)[n, m, p] softmax_p(s_2)[n, m, p] as a log-sum-exp: [B (image), B (audio)]."""
    (image_1, image_2), (audio_1, audio_2) = _heads(image_maps), _heads(audio_vecs)
    batch = ops.shape(image_1)[0]
    first = ops.reshape(ops.einsum("nhwc,mc->nmhw", image_1, audio_1), (batch, batch, -1)) / tau
    second = ops.reshape(ops.einsum("nhwc,mc->nmhw", image_2, audio_2), (batch, batch, -1)) / tau
    return ops.logsumexp(ops.log_softmax(first, axis=1) + ops.log_softmax(second, axis=2), axis=2)


def slavc_loss_terms(image_maps, audio_vecs, target_image_maps, target_audio_vecs, tau=0.03):
    """The SLAVC loss and its two terms.

    Args:
        image_maps: raw image features of the two heads, concatenated [B, h, w, 2D] (normalised here per head).
        audio_vecs: raw audio features of the two heads [B, 2D].
        target_image_maps, target_audio_vecs: the same from the momentum encoders (the targets: no gradient flows
            into them here).
        tau: temperature (0.03).

    Returns:
        dict with "loss", "image_branch" (CE of i2a: the trained image features against the momentum audio),
        "audio_branch" (CE of a2i: the momentum image features against the trained audio) and "i2a", "a2i" [B, B].

    Example:
    >>> import numpy as np
    >>> v, a = np.random.rand(4, 7, 7, 64), np.random.rand(4, 64)
    >>> float(slavc_loss_terms(v, a, v, a)["loss"]) > 0
    True
    """
    target_image_maps = ops.stop_gradient(target_image_maps)
    target_audio_vecs = ops.stop_gradient(target_audio_vecs)
    i2a = _log_localised_correspondence(image_maps, target_audio_vecs, tau)
    a2i = _log_localised_correspondence(target_image_maps, audio_vecs, tau)
    labels = ops.arange(ops.shape(i2a)[0], dtype="int32")
    image_branch = cross_entropy_with_integer_targets(i2a, labels)
    audio_branch = cross_entropy_with_integer_targets(a2i, labels)
    return {"loss": audio_branch + image_branch, "image_branch": image_branch, "audio_branch": audio_branch,
            "i2a": i2a, "a2i": a2i}


@keras.saving.register_keras_serializable(package="keras_avloc")
class SLAVC(AVLocModel):
    """SLAVC model.

    Args:
        embed_dim: size D of each projection (512).
        tau: temperature (0.03).
        image_dropout: dropout on the image backbone's features in training (0.9, the training script's).
        audio_dropout: dropout on the pooled audio vector in training (0).
        momentum: the momentum m of the target encoders (0.999, the training script's).
        localize_with: "base" (the official test) or "momentum" (its training-time validation).
        backbone_kwargs: extra keyword arguments for both ResNet-18s.
        image_layer4_stride: stride of the image ResNet-18's layer4 (2: 7 x 7 maps at 224 px).
        name: model name.
        **kwargs: `eval_settings` and `keras.Model` arguments such as `dtype`.

    Example:
    >>> model = SLAVC()
    >>> model.compile()  # Adam(1e-4)
    >>> model.fit(train_ds, epochs=20)  # doctest: +SKIP
    >>> heatmaps = model.localize(images, spectrograms)  # doctest: +SKIP
    """

    # Without dropout: its masks are drawn per replica, so the distributed check (one device against two replicas on
    # one batch) could not compare the runs; tests/test_slavc.py checks the dropout itself.
    tiny_config = {"backbone_kwargs": {"width": 8}, "embed_dim": 16, "image_dropout": 0.0}

    loss_term_names = ("loss", "image_branch", "audio_branch")
    default_learning_rate = 1e-4
    upsample_align_corners = True
    display_name = "SLAVC"
    # In the demo: layer4 stride 1 (10 x 10 maps at 160 px) like EZ-VSL's, 12 epochs, and no image dropout, chosen on
    # val: with the official 0.9 the width-16 network (128 channels at layer4, against 512) learned slowly (val AUC
    # 0.298, pointing 0.563; without: 0.338, 0.825; docs/demo.md, "FNAC and SLAVC").
    demo_recipe = {"training": {"epochs": 12}, "settings": {"image_layer4_stride": 1, "image_dropout": 0.0},
                   "full_training": {"learning_rate": 1e-4}, "tiny_settings": {"embed_dim": 16}}

    def __init__(self, embed_dim=512, tau=0.03, image_dropout=0.9, audio_dropout=0.0, momentum=0.999,
                 localize_with="base", backbone_kwargs=None, image_layer4_stride=2, name="slavc", **kwargs):
        super().__init__(name=name, **kwargs)
        if localize_with not in ("base", "momentum"):
            raise ValueError(f"SLAVC: localize_with must be 'base' or 'momentum', got {localize_with!r}.")
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"SLAVC: momentum must be in [0, 1), got {momentum!r}.")
        self.embed_dim = int(embed_dim)
        self.tau = float(tau)
        self.image_dropout = float(image_dropout)
        self.audio_dropout = float(audio_dropout)
        self.momentum = float(momentum)
        self.localize_with = localize_with
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.image_layer4_stride = int(image_layer4_stride)
        self.image_backbone, self.image_encoder, self.audio_encoder = self._encoders("")
        _, self.momentum_image_encoder, self.momentum_audio_encoder = self._encoders("momentum_")
        pairs = list(zip(self.image_encoder.weights + self.audio_encoder.weights,
                         self.momentum_image_encoder.weights + self.momentum_audio_encoder.weights))
        # Kept out of Keras' tracking (plain lists of existing variables): parameters follow the moving average,
        # batch-norm statistics are only copied once, at the first step.
        object.__setattr__(self, "_momentum_parameters", [(b, m) for b, m in pairs if b.trainable])
        object.__setattr__(self, "_momentum_statistics", [(b, m) for b, m in pairs if not b.trainable])
        for _, target in pairs:
            target.trainable = False  # no gradient; the layers stay trainable, so their batch norms use the batch
        self.momentum_updates = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="float32",
                                                name="momentum_updates")

    def _encoders(self, prefix):
        dtype = self.dtype_policy
        image_backbone = encoders.resnet18_backbone(3, self.image_layer4_stride, f"{prefix}image_resnet18",
                                                    dtype=dtype, **self.backbone_kwargs)
        image = encoders.projected_image_encoder(image_backbone, self.embed_dim, name=f"{prefix}image_encoder",
                                                 dtype=dtype, dropout=self.image_dropout, heads=2)
        audio_backbone = encoders.resnet18_backbone(1, 2, f"{prefix}audio_resnet18", dtype=dtype,
                                                    **self.backbone_kwargs)
        audio = encoders.audio_encoder(audio_backbone, pooling="max", projection_dim=self.embed_dim,
                                       name=f"{prefix}audio_encoder", dtype=dtype, dropout=self.audio_dropout,
                                       heads=2)
        return image_backbone, image, audio

    OFFICIAL_EVAL_SETTINGS = {"image_size": 224, "clip_seconds": 3.0, "image_mode": "squash", "strict_median": False}
    """The official test settings (stoneMo/SLAVC `test.py`, `datasets.py`): frames resized to 224 x 224, 3 s of
    audio centred in the clip (its 5 s option has no effect), the map binarised at its median."""

    def load_official_checkpoint(self, path, state=None):
        """Loads an official checkpoint (`latest.pth` of stoneMo/SLAVC): {"model": {"imgnet.*", "img_proj1/2.*",
        "audnet.*", "aud_proj1/2.*" and the `momentum_` copy of each}}, with `module.` prefixes under
        DistributedDataParallel. The momentum copies go to the momentum encoders, which then continue from them
        (no first-step copy).

        Args:
            path: `.pth` (needs torch) or an `.npz` of the state dict.
            state: its state dict when already read (`path` then only names it).

        Returns:
            dict {"image", "audio", "momentum_image", "momentum_audio", "projections"} of reports with "loaded" and
            "ignored" ({key: reason}: keys of the file this model has no place for, never dropped silently).
        """
        from keras_avloc.backbones import load_torch_state_dict, read_state_dict
        from keras_avloc.backbones.porting import select_state_dict, torch_projection_weights, unused_keys

        state = read_state_dict(path) if state is None else state
        flat = select_state_dict(state, "", source=str(path))
        networks = {"": (self.image_encoder, self.audio_encoder),
                    "momentum_": (self.momentum_image_encoder, self.momentum_audio_encoder)}
        projections = [(image.get_layer(f"image_projection_{k}"), f"{prefix}img_proj{k}")
                       for prefix, (image, _) in networks.items() for k in (1, 2)]
        projections += [(audio.get_layer(f"audio_projection_{k}"), f"{prefix}aud_proj{k}")
                        for prefix, (_, audio) in networks.items() for k in (1, 2)]
        values = [torch_projection_weights(layer, flat, name, source=str(path)) for layer, name in projections]
        report = {}
        for prefix, (image, audio) in networks.items():
            report[f"{prefix}image"] = load_torch_state_dict(image.get_layer(f"{prefix}image_resnet18"), state,
                                                             prefix=f"{prefix}imgnet.")
            report[f"{prefix}audio"] = load_torch_state_dict(audio.get_layer(f"{prefix}audio_resnet18"), state,
                                                             prefix=f"{prefix}audnet.")
        for (layer, _), weights in zip(projections, values):
            layer.set_weights(weights)
        self.momentum_updates.assign(1.0)
        known = tuple(f"{prefix}{name}" for prefix in networks
                      for name in ("imgnet.", "audnet.", "img_proj1.", "img_proj2.", "aud_proj1.", "aud_proj2."))
        report["projections"] = {"loaded": 2 * len(projections), "ignored": unused_keys(flat, known)}
        return report

    @classmethod
    def from_official_checkpoint(cls, path, **kwargs):
        """A complete SLAVC model with an official checkpoint's weights (momentum copies included) and the official
        test settings, ready for `model.save("model.keras")`, `avloc evaluate` and `avloc localize`. The backbone
        width and the projection size are read from the file.

        Args:
            path: the official `.pth` (needs torch) or an `.npz` of its state dict.
            **kwargs: other constructor arguments (e.g. `localize_with="momentum"`).

        Returns:
            (model, report) with `report` as in `load_official_checkpoint`.
        """
        from keras_avloc.backbones.porting import official_model

        return official_model(cls, path, "img_proj1", **kwargs)

    def update_momentum_encoders(self):
        """One momentum step, p_m <- m p_m + (1 - m) p; the first one copies every weight (the official copy at
        construction, made here at the first step so that weights loaded after construction are copied too)."""
        started = ops.greater(self.momentum_updates, 0.0)
        momentum = ops.where(started, self.momentum, 0.0)
        for base, target in self._momentum_parameters:
            target.assign(target * momentum + ops.cast(base, target.dtype) * (1.0 - momentum))
        for base, target in self._momentum_statistics:
            target.assign(ops.where(started, target, base))
        self.momentum_updates.assign(self.momentum_updates + 1.0)

    def compute_batch_terms(self, x, y, training):
        images, audio = split_inputs(x)
        features = self({"image": images, "audio": audio}, training=training)
        if training:
            self.update_momentum_encoders()
        features["target_image_maps"] = self.momentum_image_encoder(images, training=training)
        features["target_audio_vecs"] = self.momentum_audio_encoder(audio, training=training)
        features = self.global_batch(features)
        return slavc_loss_terms(features["image_maps"], features["audio_vecs"], features["target_image_maps"],
                                features["target_audio_vecs"], tau=self.tau)

    def compute_loss_terms(self, image_maps, audio_vecs):
        """The loss needs the momentum targets too: SLAVC computes its terms in `compute_batch_terms`."""
        raise NotImplementedError("SLAVC's loss needs the momentum targets; see compute_batch_terms.")

    def similarity_map(self, image_maps, audio_vecs):
        """(S_1 + S_2) / 2: the mean of the two heads' matched-pair cosine maps [B, h, w]."""
        (image_1, image_2), (audio_1, audio_2) = ops.split(image_maps, 2, axis=-1), ops.split(audio_vecs, 2, axis=-1)
        return 0.5 * (cosine_similarity_map(image_1, audio_1) + cosine_similarity_map(image_2, audio_2))

    def localization_encoders(self):
        """The (image, audio) encoders its maps come from: the base ones, or the momentum copies with
        `localize_with="momentum"` (the base class's hook; `localize` and `fast_inference_model` both ask)."""
        if self.localize_with == "momentum":
            return self.momentum_image_encoder, self.momentum_audio_encoder
        return self.image_encoder, self.audio_encoder

    def _localize_maps(self, images, audio, size):
        image_encoder, audio_encoder = self.localization_encoders()
        maps = self.similarity_map(image_encoder(images, training=False), audio_encoder(audio, training=False))
        return upsample_maps(maps, size, align_corners=self.upsample_align_corners)

    def get_config(self):
        config = super().get_config()
        config.update({"embed_dim": self.embed_dim, "tau": self.tau, "image_dropout": self.image_dropout,
                       "audio_dropout": self.audio_dropout, "momentum": self.momentum,
                       "localize_with": self.localize_with, "backbone_kwargs": self.backbone_kwargs,
                       "image_layer4_stride": self.image_layer4_stride})
        return config
