"""IEr: the interference eraser (Liu, Qian, Zheng, Li, Chen, "Visual Sound Localization in the Wild by
Cross-Modal Interference Erasing", AAAI 2022, arXiv 2202.06406).

The authors released no code, so this is the first public implementation. It follows the paper and its
supplement; every choice they leave open is listed below and kept a parameter. IEr is built on the CSOL
skeleton (`keras_avloc.models.csol`): the same encoders, localisation loss, object dictionary and clustering.

Stage one (`IErStageOne`, method "ier"; single-source clips): CSOL's stage one plus
* audio prototypes P^a [K, D]: the mean of the L2-normalised audio embeddings f_a (the 128-d localisation
  space) of each pseudo-class, computed after every clustering (the visual prototypes P^v are CSOL's object
  dictionary [K, C] in the ResNet feature space);
* the Audio Instance Identifier: a distinguishing-step MLP on the *mid-level* audio feature (layer3 of the
  audio ResNet-18, global max pool) -> Dense 512 -> ReLU -> Dense 128 -> ReLU -> Dense K x D: one step
  Delta_k(a) per class, giving the class-expanded features F_k = f_a + Delta_k(a) (`class_expanded_features`);
* its loss (`aii_loss_terms`): the presence logit of class k is s_k = w_a cos(F_k, P^a_k) + b_a, trained with
  BCE against multi-hot targets. Mix-and-separate: a mixture of n clips (the batch rolled by 1..n-1) gets
  Y = union of their pseudo-label one-hots; the log-mels are mixed in the power domain (`mix_logmels`), each
  added clip shifted by a random gain in +-`mix_level_db` (on top of the recordings' own level difference);
* re-clustering renumbers k-means' clusters every epoch: the new clusters are matched to the previous dictionary
  (Hungarian on cosine, `align_clusters`), so each class's step, prototype and dictionary entry keep meaning the
  same cluster across epochs;
* the curriculum: after each clustering the class passes mix single-source and mixed batches (each step is
  mixed with probability p), the mixed share p rising linearly from 0.5 to 0.9 and the source count from 2 to 4
  over `curriculum_epochs` clusterings (`curriculum`); p and n go to the epoch logs (TensorBoard:
  `mix_proportion`, `mix_sources`).

Stage two (`IErStageTwo`, method "ierstage2"; mixtures, initialised from stage one), the cross-modal referrer:
* class-aware AV maps A_k = sigmoid(w cos(f_v[h, w], F_k)) (the silent-object filter: a visible object of
  class k that does not sound gets a low A_k), visual prototype maps L^v = softmax over k of
  beta cos(v_fea[h, w], P^v_k), and class-specific maps M_k = A_k * L^v_k (`referrer_maps`);
* visual distribution q = softmax(gamma GAP(M)) with a learnable gamma;
* visually-guided audio distribution p^av_k proportional to sigmoid(s_k) * GAP(binarised L^v_k) (the
  off-screen filter: a class that is heard but not seen gets no weight), with s_k from the frozen stage-one
  audio network (the teacher, as CSOL's); `mask_variant` picks one of the supplement's five binarisations
  (`visual_mask_weights`);
* loss = KL(p^av || q) + KL(q || p^av) + 0.5 * CSOL's localisation BCE (`ier_stage_two_loss_terms`);
* inference: each class's map M_k times p^av_k, divided by the scene's maximum over classes and locations, upsampled
  (`localize_classes`); the filters can be switched off for inspection (`class_maps(silent_filter=False,
  offscreen_filter=False)`).

Choices where the paper is silent (each a constructor argument):
* the AII's input is layer3 globally max-pooled, its output a 128-d step per class in the localisation space
  (`step_hidden=(512, 128)`); the last layer starts at zero, so F_k = f_a at initialisation;
* the prototype similarity is a scaled cosine with a learnable scale and bias (`aii_scale_init=10`,
  `aii_bias_init=-5`: logit 0 at cosine 0.5); gradients of the AII loss reach the audio backbone;
* the mixtures roll the batch (partners may share a pseudo-class; the target is then one class); random levels
  +-6 dB (`mix_level_db`); a mixed step replaces, not adds to, the single-source AII term of that step;
* the curriculum runs per step of the class passes: a step is mixed with probability p;
* L^v uses a softmax over the K prototypes (`prototype_sharpness=10`) so the five thresholds act on a [0, 1]
  map; the thresholds: "fixed" (L > `mask_value`, 0.5), "batch_max" (L > `mask_ratio` x the batch maximum),
  "image_max" (default, L > `mask_ratio` x each image's maximum over locations and classes), "gap" (the
  plain GAP of L, no binarisation), "batch_mean" (L_k > the batch mean of L_k, per class: over all classes the
  mean of a softmax is the constant 1/K); `mask_ratio` 0.5;
* p^av is the normalised product (an all-zero product falls back to the uniform distribution), treated as a
  target (no gradient) and mixed with 5% of the uniform distribution (`target_smoothing`): the filters zero
  classes, and KL(q || p) is unbounded where p is 0 (clamped at 1e-12, the first epoch's KL was 11.7); the
  teacher is the frozen stage-one audio network, step network and prototypes;
* stage one may start from a trained CSOL stage one (`--init-from csol1/model.keras`), then clustering can
  start at once (`warmup_epochs=0`).
"""

import numpy as np
import keras
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.models.base import split_inputs, upsample_maps
from keras_avloc.models.csol import (
    AV_SCALE_INIT, CLASS_HEAD_LEARNING_RATE, CLASS_PASSES, DEFAULT_CLUSTERS, LOCATION_WEIGHT, MASK_THRESHOLD, WEIGHT_DECAY,
    CSOLBase, CSOLStageOne, av_logits, csol_class_loss_terms, object_features,
)
from keras_avloc.models.ier_losses import (  # noqa: F401 - re-exported: the formulas live there
    MASK_THRESHOLDS, MIX_END, MIX_START, SOURCES_END, SOURCES_START, TOP_DB, aii_loss_terms, class_av_logits,
    class_expanded_features, curriculum, guided_audio_distribution, ier_stage_two_loss_terms, mix_logmels,
    mixture_labels, multi_hot, prototype_logits, prototype_maps, smooth_distribution, symmetric_kl,
    visual_mask_weights,
)
from keras_avloc.models.losses_common import l2_normalize

METHODS = {"ier": "IErStageOne", "ierstage2": "IErStageTwo"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["IErStageOne", "IErStageTwo", "aii_loss_terms", "ier_stage_two_loss_terms"]




# ---------------------------------------------------------------------------------------------------
# Models.


def _step_network(input_channels, num_clusters, embed_dim, hidden, name, dtype):
    """The distinguishing-step MLP: pooled layer3 [B, C3] -> Dense(hidden...) + ReLU -> Dense(K * D) -> [B, K, D]."""
    inputs = keras.Input(shape=(input_channels,), name="mid_features")
    x = inputs
    for number, units in enumerate(hidden):
        x = keras.layers.Dense(int(units), activation="relu", name=f"step_fc_{number + 1}", dtype=dtype)(x)
    x = keras.layers.Dense(num_clusters * embed_dim, name="steps", kernel_initializer="zeros", dtype=dtype)(x)
    outputs = keras.layers.Reshape((num_clusters, embed_dim), name="steps_per_class", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


def _teacher_head(channels, embed_dim, dtype):
    """A copy of CSOL's audio head (fc 512 -> 128, ReLU, fc 128 -> 128) with its own layer names."""
    inputs = keras.Input(shape=(channels,), name="teacher_audio_features")
    hidden = keras.layers.Dense(embed_dim, activation="relu", name="teacher_audio_fc_1", dtype=dtype)(inputs)
    outputs = keras.layers.Dense(embed_dim, name="teacher_audio_fc_2", dtype=dtype)(hidden)
    return keras.Model(inputs, outputs, name="teacher_audio_head")


def _audio_taps(backbone, name, dtype):
    """(layer3 max-pooled, layer4 max-pooled) of an audio ResNet-18, sharing its layers."""
    mid = keras.layers.GlobalMaxPooling2D(name="mid_max_pool", dtype=dtype)(backbone.get_layer("layer3_1_out").output)
    top = keras.layers.GlobalMaxPooling2D(name="top_max_pool", dtype=dtype)(backbone.output)
    return keras.Model(backbone.input, [mid, top], name=name)


class _IErAudio:
    """The audio side both stages share: taps, step network, prototypes, prototype-similarity scale and bias."""

    def _build_ier_audio(self, prefix=""):
        dtype = self.dtype_policy
        backbone = self.audio_backbone if not prefix else encoders.resnet18_backbone(
            1, 1, f"{prefix}audio_resnet18", dtype=dtype, **self.backbone_kwargs)
        taps = _audio_taps(backbone, f"{prefix}audio_taps", dtype)
        mid_channels = int(taps.output_shape[0][-1])
        steps = _step_network(mid_channels, self.num_clusters, self.embed_dim, self.step_hidden,
                              f"{prefix}step_network", dtype)
        return backbone, taps, steps

    def expanded_audio(self, taps, head, steps, audio, training):
        """(f_a [B, D], F [B, K, D]) of log-mels through `taps`, `head` and `steps`."""
        mid, top = taps(audio, training=training)
        audio_vecs = head(top, training=training)
        return audio_vecs, class_expanded_features(audio_vecs, steps(mid, training=training))


@keras.saving.register_keras_serializable(package="keras_avloc")
class IErStageOne(_IErAudio, CSOLStageOne):
    """IEr stage one: CSOL's stage one plus audio prototypes and the Audio Instance Identifier.

    Train with `avloc train --method ier` (the clustering callback also computes the audio prototypes and
    trains the AII with the mix-and-separate curriculum in its class passes), optionally starting from a
    trained CSOL stage one (`--init-from csol1/model.keras --model-options '{"warmup_epochs": 0}'`).

    Args:
        num_clusters, embed_dim, backbone_kwargs, av_scale_init, weight_decay, mask_threshold, warmup_epochs,
            class_passes, class_learning_rate, kmeans_restarts: as `CSOLStageOne`.
        step_hidden: hidden widths of the distinguishing-step MLP ((512, 128)).
        aii_scale_init, aii_bias_init: initial scale and bias of the prototype logits (10, -5).
        aii_weight: weight of the AII loss beside the class heads' loss (1).
        curriculum_epochs: clusterings over which p rises 0.5 -> 0.9 and n 2 -> 4 (10).
        mix_level_db: each added clip's level is uniform in +-this (6 dB).
        **kwargs: `eval_settings`, `name`, `dtype`.

    Example:
    >>> model = IErStageOne(num_clusters=8, backbone_kwargs={"width": 8})
    >>> audio_vecs, expanded = model.expanded_audio(model.audio_taps, model.audio_head, model.step_network,
    ...                                             np.zeros((2, 201, 64, 1), "float32"), False)
    >>> tuple(expanded.shape)
    (2, 8, 128)
    """

    tiny_config = {"backbone_kwargs": {"width": 8}, "num_clusters": 3, "embed_dim": 8, "step_hidden": (16, 8)}

    display_name = "IEr stage one"
    next_stage = "ierstage2"
    # In the demo IEr continues CSOL's stage one for 6 epochs with the audio instance identifier (and CSOL's
    # augmentation and settings); on CSOL's 16 epochs, 6 were chosen on val (val AUC 0.326 / 0.332 / 0.339 after
    # 2 / 4 / 6). The demo scores this stage (val AUC 0.347, pointing game 0.750, 2.7% lost on val_unseen) rather
    # than the stage two's (0.343 / 0.719, 16% lost on val_unseen).
    demo_recipe = {"order": 5, "training": {"epochs": 6, "init_from": "csol", "augment": "ambience"},
                   "settings": {"num_clusters": 8, "warmup_epochs": 0, "mask_threshold": 0.5, "class_passes": 1},
                   "tiny_settings": {"num_clusters": 4, "warmup_epochs": 0, "kmeans_restarts": 1,
                                     "step_hidden": [16, 8]},
                   "scored_stage": 1}
    init_from_method = "csol"
    init_from_optional = True
    inherited_kwargs = ("num_clusters", "embed_dim", "backbone_kwargs", "av_scale_init", "weight_decay",
                        "mask_threshold")
    clustering_log_keys = ("mix_proportion", "mix_sources")
    class_step_terms = ("aii_loss", "aii_accuracy")

    def __init__(self, num_clusters=DEFAULT_CLUSTERS, embed_dim=128, backbone_kwargs=None, av_scale_init=AV_SCALE_INIT,
                 weight_decay=WEIGHT_DECAY, mask_threshold=MASK_THRESHOLD, warmup_epochs=1, class_passes=CLASS_PASSES,
                 class_learning_rate=CLASS_HEAD_LEARNING_RATE, kmeans_restarts=10, step_hidden=(512, 128),
                 aii_scale_init=10.0, aii_bias_init=-5.0, aii_weight=1.0, curriculum_epochs=10, mix_level_db=6.0,
                 name="ier", **kwargs):
        self.step_hidden = tuple(int(units) for units in step_hidden)
        super().__init__(num_clusters, embed_dim, backbone_kwargs, av_scale_init, weight_decay, mask_threshold,
                         warmup_epochs, class_passes, class_learning_rate, kmeans_restarts, name=name, **kwargs)
        self.aii_scale_init = float(aii_scale_init)
        self.aii_bias_init = float(aii_bias_init)
        self.aii_weight = float(aii_weight)
        self.curriculum_epochs = int(curriculum_epochs)
        self.mix_level_db = float(mix_level_db)
        _, self.audio_taps, self.step_network = self._build_ier_audio()
        self.aii_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.aii_scale_init),
                                         name="aii_scale", dtype="float32")
        self.aii_bias = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.aii_bias_init),
                                        name="aii_bias", dtype="float32")
        self.audio_prototypes = self.add_weight(shape=(self.num_clusters, self.embed_dim), initializer="zeros",
                                                trainable=False, name="audio_prototypes", dtype="float32")
        object.__setattr__(self, "_mix", (MIX_START, SOURCES_START))  # the curriculum's (p, n), set per clustering

    # ----------------------------------------------------------------- AII
    def presence_logits(self, audio, training=False):
        """s [B, K]: prototype logits of the class-expanded features of log-mels [B, T, F, 1]."""
        _, expanded = self.expanded_audio(self.audio_taps, self.audio_head, self.step_network, audio, training)
        return prototype_logits(expanded, self.audio_prototypes, self.aii_scale, self.aii_bias)

    def cluster_probabilities(self, audio):
        """sigmoid of the AII presence logits [B, K] (numpy): which clusters the audio holds."""
        return ops.convert_to_numpy(ops.sigmoid(self.presence_logits(ops.convert_to_tensor(audio))))

    def clustering_features(self, images, audio):
        outputs = self({"image": images, "audio": audio}, training=False)
        av_map = self.similarity_map(outputs["image_maps"], outputs["audio_vecs"])
        return {"object": object_features(outputs["image_features"], av_map, self.mask_threshold),
                "audio": l2_normalize(ops.cast(outputs["audio_vecs"], "float32"), axis=-1)}

    def align_clusters(self, labels, dictionary, sizes):
        """Renumbers a new clustering to match the current dictionary (Hungarian on the cosine of the entries), so
        the distinguishing step of class k keeps describing the same cluster; unchanged before any dictionary."""
        previous = np.asarray(ops.convert_to_numpy(self.dictionary), np.float64)
        if not np.abs(previous).sum():
            return labels, dictionary, sizes
        from scipy.optimize import linear_sum_assignment

        def unit(rows):
            return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)

        new, old = linear_sum_assignment(-(unit(np.asarray(dictionary, np.float64)) @ unit(previous).T))
        slot = np.empty(len(new), np.int64)
        slot[new] = old  # new cluster -> the slot of the old entry it matches
        order = np.argsort(slot)  # slot j holds new cluster order[j]
        return slot[labels].astype(labels.dtype), dictionary[order], sizes[order]

    def after_clustering(self, labels, features, epoch):
        """Audio prototypes = per-cluster means of the normalised audio embeddings; the curriculum's (p, n)."""
        prototypes = np.zeros([self.num_clusters, self.embed_dim], np.float32)
        for k in range(self.num_clusters):
            if np.any(labels == k):
                prototypes[k] = features["audio"][labels == k].mean(axis=0)
        self.audio_prototypes.assign(prototypes)
        done = int(float(ops.convert_to_numpy(self.clusterings))) - 1
        object.__setattr__(self, "_mix", curriculum(done, self.curriculum_epochs))
        return {"mix_proportion": float(self._mix[0]), "mix_sources": float(self._mix[1])}

    def class_step_options(self, rng):
        """{"sources": n} of the next class step: a mixture of n clips with probability p, else 1 (single)."""
        import tensorflow as tf

        proportion, sources = self._mix
        mixed = bool(rng.random() < proportion)
        return {"sources": tf.constant(sources if mixed else 1, tf.int32)}

    def class_step_loss_terms(self, x, labels, sources=1):
        import tensorflow as tf

        outputs = self(x, training=True)
        image_logits, audio_logits = self.class_logits(outputs)
        terms = csol_class_loss_terms(image_logits, audio_logits, labels)
        audio = ops.cast(x["audio"], "float32")
        batch = ops.shape(audio)[0]
        levels = tf.random.uniform([batch, SOURCES_END], -self.mix_level_db, self.mix_level_db)
        mixed = mix_logmels(audio, sources, levels)
        mixed_labels = mixture_labels(labels, sources, SOURCES_END)
        valid = ops.all(ops.logical_or(mixed_labels >= 0, ops.arange(SOURCES_END)[None] >= sources), axis=1)
        logits = self.presence_logits(mixed, training=True)
        terms.update(aii_loss_terms(logits, multi_hot(mixed_labels, self.num_clusters), valid))
        terms["step_loss"] = terms["class_loss"] + self.aii_weight * terms["aii_loss"]
        return terms

    def initialize_from(self, csol_stage_one):
        """Starts from a trained CSOL stage one: encoders, av scale, dictionary and class heads (the AII, the
        audio prototypes and the curriculum start fresh)."""
        self.copy_parts(csol_stage_one, CSOLStageOne, "IEr stage one", [(name, name) for name in (
            "image_backbone", "visual_head", "audio_features", "audio_head", "image_class_head", "audio_class_head")],
            needs_clustering=False)

    def get_config(self):
        config = super().get_config()
        config.update({"step_hidden": list(self.step_hidden), "aii_scale_init": self.aii_scale_init,
                       "aii_bias_init": self.aii_bias_init, "aii_weight": self.aii_weight,
                       "curriculum_epochs": self.curriculum_epochs, "mix_level_db": self.mix_level_db})
        return config


@keras.saving.register_keras_serializable(package="keras_avloc")
class IErStageTwo(_IErAudio, CSOLBase):
    """IEr stage two: the cross-modal referrer with the silent-object and off-screen filters (module docstring).

    Starts from a trained `IErStageOne` (`avloc train --method ier --stage 2 --init-from runs/ier1/model.keras`),
    whose audio network, step network and prototypes become the frozen teacher of p^av.

    Args:
        num_clusters, embed_dim, backbone_kwargs, av_scale_init, weight_decay, step_hidden: as `IErStageOne`
            (inherited from it by `--init-from`).
        location_weight: weight of the localisation BCE (0.5).
        mask_variant: one of MASK_THRESHOLDS ("image_max").
        mask_ratio, mask_value: the ratio of the max-based thresholds (0.5) and the fixed threshold (0.5).
        prototype_sharpness: beta of L^v = softmax(beta cos(v_fea, P^v)) (10).
        class_scale_init: initial gamma of q = softmax(gamma GAP(M)) (10).
        silent_filter: use the class-aware A_k (True) or the class-agnostic av_map for every class (ablation).
        offscreen_filter: weight p^a by the visual masks (True) or not (ablation).
        target_smoothing: p^av is mixed with the uniform distribution by this share before the KL (0.05).
        **kwargs: `eval_settings`, `name`, `dtype`.

    Example:
    >>> stage_two = IErStageTwo(num_clusters=8)
    >>> stage_two.initialize_from(stage_one)  # doctest: +SKIP
    >>> class_maps = stage_two.localize_classes(images, audio)  # [B, K, H, W]  # doctest: +SKIP
    """

    tiny_config = {"backbone_kwargs": {"width": 8}, "num_clusters": 3, "embed_dim": 8, "step_hidden": (16, 8)}

    loss_term_names = ("loss", "kl", "location", "positive_bce", "negative_bce")
    display_name = "IEr"
    # The demo's stage two: the official 1e-4, and the mask weighting chosen on val_interf (the paper's default,
    # image_max, was among the worst there).
    demo_recipe = {"training": {"epochs": 5, "learning_rate": 1e-4}, "settings": {"mask_variant": "gap"},
                   "tiny_settings": {"mask_variant": "gap"}}
    init_from_method = "ier"
    inherited_kwargs = ("num_clusters", "embed_dim", "backbone_kwargs", "av_scale_init", "weight_decay", "step_hidden")
    default_split = "train_mosaic"

    def __init__(self, num_clusters=DEFAULT_CLUSTERS, embed_dim=128, backbone_kwargs=None, av_scale_init=AV_SCALE_INIT,
                 weight_decay=WEIGHT_DECAY, step_hidden=(512, 128), location_weight=LOCATION_WEIGHT,
                 mask_variant="image_max", mask_ratio=0.5, mask_value=0.5, prototype_sharpness=10.0,
                 class_scale_init=10.0, silent_filter=True, offscreen_filter=True, target_smoothing=0.05,
                 name="ier_stage2", **kwargs):
        if mask_variant not in MASK_THRESHOLDS:
            raise ValueError(f"IEr mask_variant {mask_variant!r}: choose one of {', '.join(MASK_THRESHOLDS)}.")
        self.step_hidden = tuple(int(units) for units in step_hidden)
        super().__init__(num_clusters, embed_dim, backbone_kwargs, av_scale_init, weight_decay, name=name, **kwargs)
        self.location_weight = float(location_weight)
        self.mask_variant = str(mask_variant)
        self.mask_ratio = float(mask_ratio)
        self.mask_value = float(mask_value)
        self.prototype_sharpness = float(prototype_sharpness)
        self.class_scale_init = float(class_scale_init)
        self.silent_filter = bool(silent_filter)
        self.offscreen_filter = bool(offscreen_filter)
        self.target_smoothing = float(target_smoothing)
        dtype = self.dtype_policy
        _, self.audio_taps, self.step_network = self._build_ier_audio()
        _, self.teacher_taps, self.teacher_steps = self._build_ier_audio("teacher_")
        self.teacher_head = _teacher_head(self.feature_channels, self.embed_dim, dtype)
        for part in (self.teacher_taps, self.teacher_steps, self.teacher_head):
            part.trainable = False
        self.class_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.class_scale_init),
                                           name="class_scale", dtype="float32")
        self.teacher_scale = self.add_weight(shape=(), initializer="ones", trainable=False, name="teacher_scale",
                                             dtype="float32")
        self.teacher_bias = self.add_weight(shape=(), initializer="zeros", trainable=False, name="teacher_bias",
                                            dtype="float32")
        self.audio_prototypes = self.add_weight(shape=(self.num_clusters, self.embed_dim), initializer="zeros",
                                                trainable=False, name="audio_prototypes", dtype="float32")

    def initialize_from(self, stage_one):
        """Copies a trained IEr stage one (encoders, step network, dictionary, prototypes) and makes its audio
        side the frozen teacher.

        Raises:
            ValueError: the stage-one model does not match or has not clustered yet.
        """
        self.copy_parts(stage_one, IErStageOne, "IEr stage two", (
            ("image_backbone", "image_backbone"), ("visual_head", "visual_head"), ("audio_taps", "audio_taps"),
            ("audio_head", "audio_head"), ("step_network", "step_network"), ("teacher_taps", "audio_taps"),
            ("teacher_head", "audio_head"), ("teacher_steps", "step_network")),
            fields=("num_clusters", "embed_dim", "feature_channels", "step_hidden"))
        self.audio_prototypes.assign(stage_one.audio_prototypes)
        self.teacher_scale.assign(stage_one.aii_scale)
        self.teacher_bias.assign(stage_one.aii_bias)

    def presence_logits(self, audio):
        """s [B, K] of the frozen teacher (stage one's AII)."""
        _, expanded = self.expanded_audio(self.teacher_taps, self.teacher_head, self.teacher_steps, audio, False)
        return prototype_logits(expanded, self.audio_prototypes, self.teacher_scale, self.teacher_bias)

    def cluster_probabilities(self, audio):
        """sigmoid of the teacher's presence logits [B, K] (numpy)."""
        return ops.convert_to_numpy(ops.sigmoid(self.presence_logits(ops.convert_to_tensor(audio))))

    def referrer(self, x, training=False, silent_filter=None, offscreen_filter=None, mask_variant=None):
        """The cross-modal referrer of a batch.

        Returns:
            dict: "image_maps" f_v, "audio_vecs" f_a, "prototype_maps" L^v [B, h, w, K], "av_maps" A [B, h, w, K],
            "class_maps" M = A * L^v, "mask_weights" [B, K], "audio_distribution" p^av [B, K].
        """
        silent_filter = self.silent_filter if silent_filter is None else silent_filter
        offscreen_filter = self.offscreen_filter if offscreen_filter is None else offscreen_filter
        images, audio = split_inputs(x)
        image_features = self.image_backbone(images, training=training)
        image_maps = self.visual_head(image_features, training=training)
        audio_vecs, expanded = self.expanded_audio(self.audio_taps, self.audio_head, self.step_network, audio, training)
        prototype = prototype_maps(image_features, self.dictionary, self.prototype_sharpness)
        if silent_filter:
            av = ops.sigmoid(class_av_logits(image_maps, expanded, self.av_scale))
        else:
            av = ops.repeat(ops.sigmoid(av_logits(image_maps, audio_vecs, self.av_scale))[..., None],
                            self.num_clusters, axis=-1)
        weights = visual_mask_weights(prototype, mask_variant or self.mask_variant, self.mask_ratio,
                                      self.mask_value) if offscreen_filter else None
        distribution = guided_audio_distribution(self.presence_logits(audio), weights)
        return {"image_maps": image_maps, "audio_vecs": audio_vecs, "prototype_maps": prototype, "av_maps": av,
                "class_maps": av * prototype, "mask_weights": weights, "audio_distribution": distribution}

    def compute_batch_terms(self, x, y, training):
        parts = self.global_batch(self.referrer(x, training=training))
        target = smooth_distribution(parts["audio_distribution"], self.target_smoothing)
        return ier_stage_two_loss_terms(parts["image_maps"], parts["audio_vecs"], self.av_scale, parts["class_maps"],
                                        target, self.class_scale, self.location_weight)

    def class_maps(self, images, audio, silent_filter=None, offscreen_filter=None, mask_variant=None):
        """Class-specific maps [B, K, h, w] in [0, 1]: M_k times p^av_k, divided by the scene's maximum over classes
        and locations (the strongest class peaks at 1; a class weaker than it stays low)."""
        parts = self.referrer({"image": images, "audio": audio}, False, silent_filter, offscreen_filter,
                              mask_variant)
        maps = parts["class_maps"] * parts["audio_distribution"][:, None, None, :]
        maps = maps / ops.maximum(ops.max(maps, axis=(1, 2, 3), keepdims=True), 1e-12)
        return ops.transpose(maps, (0, 3, 1, 2))

    def localize_classes(self, images, audio, image_size=None, silent_filter=None, offscreen_filter=None,
                         mask_variant=None):
        """Class-specific heatmaps.

        Args:
            images: float [B, H, W, 3], ImageNet-normalised; audio: [B, T, F, 1] log-mels.
            image_size: output (H, W); default the input size.
            silent_filter, offscreen_filter, mask_variant: override the model's settings (inspection).

        Returns:
            numpy float32 [B, K, H, W] in [0, 1].
        """
        images = ops.convert_to_tensor(images)
        size = tuple(int(side) for side in (image_size or (images.shape[1], images.shape[2])))
        key = (self.silent_filter if silent_filter is None else bool(silent_filter),
               self.offscreen_filter if offscreen_filter is None else bool(offscreen_filter),
               mask_variant or self.mask_variant)
        graphs = self.__dict__.setdefault("_compiled_classes", {})
        if key not in graphs:
            import tensorflow as tf

            def run(images, audio, size):
                maps = self.class_maps(images, audio, *key)
                batch, classes = ops.shape(maps)[0], ops.shape(maps)[1]
                flat = ops.reshape(maps, (-1, maps.shape[2], maps.shape[3]))
                return ops.reshape(upsample_maps(flat, size), (batch, classes, size[0], size[1]))

            graphs[key] = tf.function(run)
        return ops.convert_to_numpy(graphs[key](images, ops.convert_to_tensor(audio), size))

    def get_config(self):
        config = super().get_config()
        config.update({"step_hidden": list(self.step_hidden), "location_weight": self.location_weight,
                       "mask_variant": self.mask_variant, "mask_ratio": self.mask_ratio,
                       "mask_value": self.mask_value, "prototype_sharpness": self.prototype_sharpness,
                       "class_scale_init": self.class_scale_init, "silent_filter": self.silent_filter,
                       "offscreen_filter": self.offscreen_filter, "target_smoothing": self.target_smoothing})
        return config
