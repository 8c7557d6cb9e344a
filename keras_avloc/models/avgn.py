"""AVGN: Audio-Visual Grouping Network (Mo & Tian, CVPR 2023) for localising sounds in mixtures.

Structure (facts from the paper and the authors' code, stoneMo/AVGN):

* Encoders as EZ-VSL: image ResNet-18 (layer4 stride 2, 7x7 at 224 px) + 1x1 conv projection;
  audio ResNet-18 on the 1-channel spectrogram + global max pool + linear; D = 512; both
  L2-normalised.
* C learnable audio-visual class tokens, shared by both modalities. An audio and a visual
  transformer (3 pre-norm attention blocks, 8 heads, MLP ratio 4, drop-path 0.1) run over
  ``[features; class tokens]``; a grouping block then assigns the features to the C tokens (soft
  assignment: softmax over the groups, then normalised over the features; or hard: straight-through
  Gumbel one-hot) giving class-aware audio tokens g^a [B, C, D] and visual tokens g^v [B, C, D].
* Losses (weights 1):
  - class-constraint: CE(fc_cls(class tokens) [C, C], identity targets);
  - per-class binary probabilities ``sigmoid(fc(g_i))`` for audio and for vision, BCE against the
    multi-hot class targets (audio: all sources of the mixture; vision: the sources the frame shows,
    i.e. source 0 in the authors' protocol where a mixture's frame is that of its first source);
  - localisation: for each visible source n of clip b, the class-aware audio token of its class,
    g^a[b, y_bn], against the spatial visual features of every clip m of the batch:
    ``logit[b, m] = max_p cos(g^a[b, y_bn], f^v[m, p]) / tau`` (tau = 0.03), symmetric
    cross-entropy with the matching clip as target, averaged over the valid (b, n) pairs.
* Inference: per-source heatmaps = cosine similarity between the class-aware audio token of a
  source and the spatial features, upsampled bilinearly. Unlike the authors' test code the class of
  each source is *predicted* (top-N audio class probabilities, optionally thresholded); passing
  ``class_ids`` reproduces the paper's ground-truth-conditioned protocol.

Deviations from the authors' code, all documented where they occur: the class tokens start from a
truncated normal (std 0.02) instead of zeros; the localisation loss L2-normalises the audio tokens
(the paper writes cosine similarity, the code leaves them unnormalised); BCE is computed from logits
(numerically stable, same value); the unused cross-modal "HAN" grouping branch is not built; the
frames of mixtures may show every source (``visible_sources="all"``) as well as only the first.
"""

import keras
import numpy as np
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.layers.grouping import GroupingEncoder
from keras_avloc.models.base import AVLocModel, as_keras_model, split_inputs, upsample_maps
from keras_avloc.models.losses_common import cross_entropy_with_integer_targets, l2_normalize

METHODS = {"avgn": "AVGN"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["AVGN", "avgn_loss_terms", "avgn_localization_loss", "avgn_class_loss", "avgn_token_loss"]


# --------------------------------------------------------------------------- pure loss functions
def multi_hot_targets(labels, num_classes):
    """Multi-hot class targets from per-source class indices.

    Args:
        labels: int tensor [B, N] (or [B]) of class indices; -1 marks "no source".
        num_classes: C.

    Returns:
        float32 [B, C] with 1 for every class present among the sources.

    Example:
    >>> multi_hot_targets(np.array([[2, -1], [0, 1]]), 3)  # -> [[0, 0, 1], [1, 1, 0]]
    """
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) == 1:
        labels = labels[:, None]
    labels = ops.cast(labels, "int32")
    valid = ops.cast(labels >= 0, "float32")
    one_hot = ops.one_hot(ops.maximum(labels, 0), num_classes, dtype="float32") * valid[..., None]
    return ops.minimum(ops.sum(one_hot, axis=1), 1.0)


def avgn_token_loss(token_logits):
    """Class-constraint loss: each class token must be classified as its own class.

    Args:
        token_logits: float [C, C], ``fc_cls`` applied to the C class tokens (row i = token i).

    Returns:
        Scalar mean softmax cross-entropy against the identity targets ``0..C-1``.
    """
    token_logits = ops.cast(token_logits, "float32")
    return cross_entropy_with_integer_targets(token_logits, ops.arange(token_logits.shape[0], dtype="int32"))


def binary_cross_entropy_with_logits(logits, targets):
    """Mean element-wise BCE of ``sigmoid(logits)`` against ``targets`` (stable form)."""
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    per_element = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.mean(per_element)


def avgn_class_loss(audio_logits, visual_logits, audio_targets, visual_targets):
    """Per-class binary classification of the class-aware tokens, audio + visual.

    Args:
        audio_logits: float [B, C], ``fc_prob_a(g^a_i)`` (pre-sigmoid).
        visual_logits: float [B, C], ``fc_prob_v(g^v_i)`` (pre-sigmoid).
        audio_targets: float [B, C] multi-hot classes heard in the audio.
        visual_targets: float [B, C] multi-hot classes visible in the image.

    Returns:
        Scalar: mean BCE (audio) + mean BCE (visual).
    """
    return binary_cross_entropy_with_logits(audio_logits, audio_targets) + binary_cross_entropy_with_logits(
        visual_logits, visual_targets
    )


def select_source_tokens(class_tokens, class_ids):
    """Gathers the class-aware tokens of given classes.

    Args:
        class_tokens: float [B, C, D].
        class_ids: int [B, N]; -1 entries return token 0 (mask them out downstream).

    Returns:
        float [B, N, D].
    """
    class_ids = ops.maximum(ops.cast(class_ids, "int32"), 0)
    return ops.take_along_axis(class_tokens, class_ids[..., None], axis=1)


def avgn_localization_loss(image_maps, source_tokens, source_mask, tau=0.03):
    """Multiple-instance contrastive loss between class-aware audio tokens and visual features.

    ``logit[b, n, m] = max_p cos(source_tokens[b, n], image_maps[m, p]) / tau``. For each valid
    source (b, n): audio->image CE over the clips m (target b), and image->audio CE over the valid
    sources (b', n) of the same slot n (target b). Both are averaged over the valid sources and
    summed, which equals the authors' ``CE(logits) + CE(logits^T)`` for one source per clip.

    Args:
        image_maps: float [B, h, w, D] spatial visual features (normalised here).
        source_tokens: float [B, N, D] class-aware audio tokens of each source (normalised here).
        source_mask: [B, N], 1/True where the source exists.
        tau: temperature (0.03).

    Returns:
        Scalar float32 loss (0 when no source is valid).
    """
    image_maps = l2_normalize(image_maps, axis=-1)
    source_tokens = l2_normalize(source_tokens, axis=-1)
    batch = ops.shape(image_maps)[0]
    features = ops.reshape(image_maps, (batch, -1, image_maps.shape[-1]))
    scores = ops.einsum("bnd,mpd->bnmp", source_tokens, features) / tau
    logits = ops.max(scores, axis=-1)  # [B, N, M]
    mask = ops.cast(source_mask, "float32")
    matched = ops.transpose(ops.diagonal(logits, axis1=0, axis2=2))  # [B, N]: logit[b, n, b]

    audio_to_image = ops.logsumexp(logits, axis=-1) - matched
    # For image m and slot n the candidates are the valid sources (b, n) of that slot.
    very_negative = ops.cast(-1e9, "float32")
    candidates = ops.where(mask[:, :, None] > 0, logits, very_negative)  # [B, N, M]
    image_to_audio = ops.logsumexp(candidates, axis=0) - ops.transpose(matched)  # [N, M]
    image_to_audio = ops.transpose(image_to_audio)  # [B(=M), N]

    count = ops.maximum(ops.sum(mask), 1.0)
    return (ops.sum(audio_to_image * mask) + ops.sum(image_to_audio * mask)) / count


def avgn_loss_terms(outputs, labels, token_logits, tau=0.03, visible_sources="first"):
    """All AVGN loss terms for one batch.

    Args:
        outputs: dict from ``AVGN.call`` with "image_maps" [B, h, w, D], "audio_tokens" [B, C, D],
            "audio_logits" [B, C] and "visual_logits" [B, C].
        labels: int [B, N] class index of every source in the audio (-1 = none) or [B] for single
            sources.
        token_logits: float [C, C] class-token logits.
        tau: localisation temperature.
        visible_sources: which sources the image shows. "first" (the authors' training protocol and
            `make_dataset(..., mix_sources=2)` on single-source records: the frame of source 0 with the
            audio of the mixture): the localisation loss and the visual class target use source 0
            only. "all": the frame shows every source (annotated mixtures).

    Returns:
        dict with "loss" (sum, weights 1), "loc_loss", "token_loss", "class_loss".
    """
    if visible_sources not in ("first", "all"):
        raise ValueError(f"avgn.py: visible_sources must be 'first' or 'all', got {visible_sources!r}.")
    labels = ops.cast(ops.convert_to_tensor(labels), "int32")
    if len(labels.shape) == 1:
        labels = labels[:, None]
    num_classes = outputs["audio_logits"].shape[-1]
    visible = labels if visible_sources == "all" else labels[:, :1]
    source_tokens = select_source_tokens(outputs["audio_tokens"], visible)
    loc_loss = avgn_localization_loss(outputs["image_maps"], source_tokens, visible >= 0, tau=tau)
    token_loss = avgn_token_loss(token_logits)
    class_loss = avgn_class_loss(
        outputs["audio_logits"], outputs["visual_logits"],
        multi_hot_targets(labels, num_classes), multi_hot_targets(visible, num_classes),
    )
    return {
        "loss": loc_loss + token_loss + class_loss,
        "loc_loss": loc_loss,
        "token_loss": token_loss,
        "class_loss": class_loss,
    }


def labels_from_targets(y):
    """Source class indices [B, N] from a dataset's y dict ("labels" [B, N] or "label" [B])."""
    if isinstance(y, dict):
        if "labels" in y:
            return ops.cast(y["labels"], "int32")
        if "label" in y:
            return ops.cast(y["label"], "int32")[:, None]
    elif y is not None:
        labels = ops.cast(ops.convert_to_tensor(y), "int32")
        return labels if len(labels.shape) == 2 else labels[:, None]
    raise ValueError(
        "AVGN (keras_avloc/models/avgn.py) is weakly supervised and needs class labels: pass datasets "
        "whose y has 'label' [B] or 'labels' [B, N] (keras_avloc.data.make_dataset(..., mix_sources=2))."
    )


# --------------------------------------------------------------------------- model
@keras.saving.register_keras_serializable(package="keras_avloc")
class AVGN(AVLocModel):
    """Audio-Visual Grouping Network.

    Args:
        num_classes: number of sound-source classes C (= class tokens); may be omitted when
            `class_names` is given.
        embed_dim: feature dimension D (512).
        depth: attention blocks per modality transformer (3).
        num_heads: attention heads (8).
        mlp_ratio: transformer MLP ratio (4).
        drop_path: stochastic-depth rate (0.1).
        assignment: "soft" (default, as the authors' default) or "hard" (straight-through Gumbel).
        tau: localisation-loss temperature (0.03).
        visible_sources: "first" (default): training frames show source 0 of each mixture only, as
            in the authors' training and `make_dataset(..., mix_sources=2)`; "all": frames show every
            source. See `avgn_loss_terms`.
        inference_sources: how many sources `localize` considers (top-N predicted classes).
        min_class_probability: `localize` drops predicted sources whose audio class probability is
            below this (the most probable class is always kept); None keeps all N.
        image_layer4_stride: stride of the image ResNet-18's layer4 (2 as in the paper; 1 doubles
            the heatmap resolution).
        backbone_kwargs: extra keyword arguments for both ResNet-18s (e.g. {"width": 8} for tests).
        image_encoder: optional Keras model replacing the ResNet-18 image encoder + projection:
            images [B, H, W, 3] -> feature maps [B, h, w, embed_dim]. Give both encoders or neither.
        audio_encoder: optional Keras model replacing the audio encoder: spectrograms
            [B, F, T, 1] -> vectors [B, embed_dim].
        class_names: optional class names (index = class id), kept in the saved model; sets
            `num_classes` when that is not given.
        name: model name.
        **kwargs: `eval_settings` and `keras.Model` arguments such as `dtype` (see `AVLocModel`).

    Example:
    >>> model = AVGN(num_classes=40)
    >>> model.compile()  # Adam(1e-4)
    >>> model.fit(make_dataset(root, "train", training=True, mix_sources=2), epochs=20)  # doctest: +SKIP
    >>> heatmaps, class_ids, probs = model.localize_sources(images, spectrograms, n_sources=2)  # doctest: +SKIP
    """

    tiny_config = {"backbone_kwargs": {"width": 8}, "embed_dim": 16, "num_classes": 3, "depth": 1}

    loss_term_names = ("loss", "loc_loss", "token_loss", "class_loss")
    default_learning_rate = 1e-4
    upsample_align_corners = False
    default_mix_sources = 2
    needs_class_names = True
    display_name = "AVGN"
    # In the demo AVGN learns faster at 6e-4 than at the shared 3e-4 (val AUC 0.346 vs 0.336; 1e-3: 0.342), with LVS's
    # map resolution (layer4 stride 1) and a one-layer grouping transformer of width 128.
    demo_recipe = {"order": 3, "default": True, "training": {"learning_rate": 6e-4},
                   "settings": {"image_layer4_stride": 1, "embed_dim": 128, "num_heads": 4, "depth": 1},
                   "tiny_settings": {"embed_dim": 16, "num_heads": 2, "depth": 1}}

    def __init__(
        self,
        num_classes=None,
        embed_dim=512,
        depth=3,
        num_heads=8,
        mlp_ratio=4.0,
        drop_path=0.1,
        assignment="soft",
        tau=0.03,
        visible_sources="first",
        inference_sources=2,
        min_class_probability=0.5,
        image_layer4_stride=2,
        backbone_kwargs=None,
        image_encoder=None,
        audio_encoder=None,
        class_names=None,
        name="avgn",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if assignment not in ("soft", "hard"):
            raise ValueError(f"AVGN: assignment must be 'soft' or 'hard', got {assignment!r}.")
        self.class_names = None if class_names is None else [str(name) for name in class_names]
        if num_classes is None:
            if self.class_names is None:
                raise ValueError("AVGN: give num_classes (the number of source classes) or class_names, e.g. "
                                 "AVGN(class_names=make_dataset(root, 'train').class_list).")
            num_classes = len(self.class_names)
        if int(num_classes) < 1:
            raise ValueError(f"AVGN: num_classes must be a positive integer, got {num_classes!r}.")
        if self.class_names is not None and len(self.class_names) != int(num_classes):
            raise ValueError(f"AVGN: {len(self.class_names)} class_names for num_classes={num_classes}.")
        self.num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.depth, self.num_heads, self.mlp_ratio, self.drop_path = depth, num_heads, mlp_ratio, drop_path
        self.assignment, self.tau = assignment, tau
        if visible_sources not in ("first", "all"):
            raise ValueError(f"AVGN: visible_sources must be 'first' or 'all', got {visible_sources!r}.")
        self.visible_sources = visible_sources
        self.inference_sources, self.min_class_probability = inference_sources, min_class_probability
        self.image_layer4_stride = image_layer4_stride
        self.backbone_kwargs = dict(backbone_kwargs or {})

        if (image_encoder is None) != (audio_encoder is None):
            raise ValueError("AVGN: pass both image_encoder and audio_encoder, or neither (ResNet-18 encoders).")
        dtype = self.dtype_policy
        if image_encoder is None:
            self.image_backbone = encoders.resnet18_backbone(3, image_layer4_stride, "image_resnet18", dtype=dtype,
                                                    **self.backbone_kwargs)
            self.image_encoder = encoders.projected_image_encoder(self.image_backbone, embed_dim, dtype=dtype)
            self.audio_backbone = encoders.resnet18_backbone(1, 2, "audio_resnet18", dtype=dtype, **self.backbone_kwargs)
            self.audio_encoder = encoders.audio_encoder(self.audio_backbone, pooling="max", projection_dim=embed_dim,
                                               dtype=dtype)
            self.custom_encoders = False
        else:
            self.image_encoder = as_keras_model(image_encoder, "AVGN image_encoder")
            self.audio_encoder = as_keras_model(audio_encoder, "AVGN audio_encoder")
            self.image_backbone, self.audio_backbone = self.image_encoder, self.audio_encoder
            self.custom_encoders = True
            widths = (self.image_encoder.output_shape[-1], self.audio_encoder.output_shape[-1])
            if widths != (self.embed_dim, self.embed_dim):
                raise ValueError(
                    f"AVGN: custom encoders must output embed_dim={self.embed_dim} channels (got image "
                    f"{self.image_encoder.output_shape}, audio {self.audio_encoder.output_shape}); add a projection."
                )

        self.class_tokens = self.add_weight(
            shape=(self.num_classes, self.embed_dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="class_tokens",
        )
        hard = assignment == "hard"
        grouping_args = dict(depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path=drop_path, hard=hard)
        self.audio_grouping = GroupingEncoder(self.embed_dim, self.num_classes, name="audio_grouping", dtype=dtype,
                                              **grouping_args)
        self.visual_grouping = GroupingEncoder(self.embed_dim, self.num_classes, name="visual_grouping", dtype=dtype,
                                               **grouping_args)
        head_init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.audio_class_head = keras.layers.Dense(1, kernel_initializer=head_init, name="audio_class_head",
                                                   dtype=dtype)
        self.visual_class_head = keras.layers.Dense(1, kernel_initializer=head_init, name="visual_class_head",
                                                    dtype=dtype)
        self.token_class_head = keras.layers.Dense(self.num_classes, kernel_initializer=head_init,
                                                   name="token_class_head", dtype=dtype)
        for layer in (self.audio_grouping, self.visual_grouping):
            layer.build()
        for layer in (self.audio_class_head, self.visual_class_head, self.token_class_head):
            layer.build((None, self.embed_dim))
        self.built = True

    # ----------------------------------------------------------------- forward
    def call(self, inputs, training=False):
        """Encodes a batch and groups it into class-aware tokens.

        Args:
            inputs: {"image": [B, H, W, 3], "audio": [B, F, T, 1]} or (images, audio).
            training: batch-norm / drop-path / Gumbel-noise mode.

        Returns:
            dict with "image_maps" [B, h, w, D] and "audio_vecs" [B, D] (L2-normalised),
            "audio_tokens" / "visual_tokens" [B, C, D] (class-aware g^a, g^v),
            "audio_logits" / "visual_logits" [B, C] (per-class binary logits),
            "audio_assignment" [B, C, 1] and "visual_assignment" [B, C, h*w] (sum to 1 over C).
        """
        images, audio = split_inputs(inputs)
        image_maps = l2_normalize(self.encode_image(images, training=training), axis=-1)
        audio_vecs = l2_normalize(self.encode_audio(audio, training=training), axis=-1)
        batch = ops.shape(image_maps)[0]
        visual_features = ops.reshape(image_maps, (batch, -1, self.embed_dim))
        visual_tokens, visual_assignment = self.visual_grouping(visual_features, self.class_tokens, training=training)
        audio_tokens, audio_assignment = self.audio_grouping(audio_vecs[:, None, :], self.class_tokens,
                                                             training=training)
        return {
            "image_maps": image_maps,
            "audio_vecs": audio_vecs,
            "audio_tokens": audio_tokens,
            "visual_tokens": visual_tokens,
            "audio_logits": ops.squeeze(self.audio_class_head(audio_tokens), -1),
            "visual_logits": ops.squeeze(self.visual_class_head(visual_tokens), -1),
            "audio_assignment": audio_assignment,
            "visual_assignment": visual_assignment,
        }

    def token_logits(self):
        """Class-token logits [C, C] for the class-constraint loss."""
        return self.token_class_head(self.class_tokens)

    # ----------------------------------------------------------------- training
    def compute_loss_terms(self, outputs, labels):
        """AVGN loss terms from `call` outputs and source labels [B, N] (see `avgn_loss_terms`)."""
        return avgn_loss_terms(outputs, labels, self.token_logits(), tau=self.tau,
                               visible_sources=self.visible_sources)

    def compute_batch_terms(self, x, y, training):
        """The base class's training hook: AVGN needs the source labels of y (see `labels_from_targets`)."""
        outputs, labels = self.global_batch((self(x, training=training), labels_from_targets(y)))
        return self.compute_loss_terms(outputs, labels)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        images, audio = split_inputs(x)
        heatmaps, _, _ = self._source_maps(images, audio, self.inference_sources, None, self.min_class_probability)
        maps = ops.max(heatmaps, axis=1)
        return upsample_maps(maps, (images.shape[1], images.shape[2]), align_corners=self.upsample_align_corners)

    # ----------------------------------------------------------------- inference
    def _source_maps(self, images, audio, n_sources, class_ids, min_probability):
        """Feature-resolution source maps [B, N, h, w], class ids [B, N], class probabilities [B, C]."""
        outputs = self({"image": images, "audio": ops.convert_to_tensor(audio)}, training=False)
        class_probs = ops.sigmoid(outputs["audio_logits"])
        if class_ids is None:
            n_sources = min(int(n_sources), self.num_classes)
            top_probs, class_ids = ops.top_k(class_probs, k=n_sources)
            class_ids = ops.cast(class_ids, "int32")
            if min_probability is not None:
                keep = top_probs >= min_probability
                keep = ops.concatenate([ops.ones_like(keep[:, :1]), keep[:, 1:]], axis=1)
                class_ids = ops.where(keep, class_ids, -1)
        else:
            class_ids = ops.cast(ops.convert_to_tensor(class_ids), "int32")
            if len(class_ids.shape) == 1:
                class_ids = class_ids[:, None]
        tokens = l2_normalize(select_source_tokens(outputs["audio_tokens"], class_ids), axis=-1)
        maps = ops.einsum("bnd,bhwd->bnhw", tokens, outputs["image_maps"])
        # Absent sources get the lowest cosine so they never win the max over sources.
        maps = ops.where((class_ids >= 0)[:, :, None, None], maps, -1.0)
        return maps, class_ids, class_probs

    def localize_sources(self, images, audio, n_sources=2, class_ids=None, min_probability=None, image_size=None):
        """Per-source heatmaps for (possibly mixed) audio.

        Args:
            images: float [B, H, W, 3], ImageNet-normalised.
            audio: float [B, F, T, 1] spectrograms (of the mixture).
            n_sources: N, number of sources to localise when `class_ids` is None: the N most
                probable classes of the audio grouping head.
            class_ids: optional int [B, N] classes to localise (ground-truth-conditioned protocol
                of the paper); -1 entries give maps filled with -1.
            min_probability: optional threshold; predicted sources below it (except the most
                probable one) get class id -1 and a map filled with -1.
            image_size: (H, W) of the maps; defaults to the input size.

        Returns:
            ``(heatmaps, class_ids, class_probs)`` as numpy arrays: float32 [B, N, H, W] (cosine
            similarity in [-1, 1], bilinearly upsampled), int32 [B, N], float32 [B, C]
            (sigmoid audio class probabilities).

        Example:
        >>> maps, ids, probs = model.localize_sources(images, mixture_spectrograms)  # doctest: +SKIP
        """
        images = ops.convert_to_tensor(images)
        size = image_size or (images.shape[1], images.shape[2])
        maps, class_ids, class_probs = self._source_maps(images, audio, n_sources, class_ids, min_probability)
        batch, count = ops.shape(maps)[0], ops.shape(maps)[1]
        flat = ops.reshape(maps, (batch * count, maps.shape[2], maps.shape[3]))
        upsampled = upsample_maps(flat, size, align_corners=self.upsample_align_corners)
        upsampled = ops.reshape(upsampled, (batch, count, int(size[0]), int(size[1])))
        return (
            ops.convert_to_numpy(upsampled),
            ops.convert_to_numpy(class_ids).astype(np.int32),
            ops.convert_to_numpy(class_probs),
        )

    def localize(self, images, audio, image_size=None, n_sources=None, min_probability="default", class_ids=None):
        """Single heatmap per clip: the max over the predicted sources' maps.

        Args:
            images: float [B, H, W, 3]; audio: float [B, F, T, 1].
            image_size: output (H, W); defaults to the input size.
            n_sources: sources considered (default: the model's `inference_sources`).
            min_probability: threshold on class probabilities (default: the model's
                `min_class_probability`; None keeps all top-N).
            class_ids: optional ground-truth classes [B] or [B, N] instead of predictions.

        Returns:
            numpy float32 [B, H, W].
        """
        if min_probability == "default":
            min_probability = self.min_class_probability
        heatmaps, _, _ = self.localize_sources(
            images, audio, n_sources=n_sources or self.inference_sources, class_ids=class_ids,
            min_probability=min_probability, image_size=image_size,
        )
        return heatmaps.max(axis=1)

    # ----------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "drop_path": self.drop_path,
            "assignment": self.assignment,
            "tau": self.tau,
            "visible_sources": self.visible_sources,
            "inference_sources": self.inference_sources,
            "min_class_probability": self.min_class_probability,
            "image_layer4_stride": self.image_layer4_stride,
            "backbone_kwargs": self.backbone_kwargs,
            "class_names": self.class_names,
        })
        if self.custom_encoders:
            config["image_encoder"] = keras.saving.serialize_keras_object(self.image_encoder)
            config["audio_encoder"] = keras.saving.serialize_keras_object(self.audio_encoder)
        return config
