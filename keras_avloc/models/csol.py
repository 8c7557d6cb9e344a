"""CSOL: class-aware sounding-object localisation in two stages (Hu et al., TPAMI 2021).

Constants follow the official code, GeWu-Lab/CSOL_TPAMI2021 `code/CSOL/`: the networks from
`model/location_model.py` (and `model/base_model2.py` for the ResNet-18s), stage one from
`training_stage_one.py`, stage two from `training_stage_two.py`, inference from `test_stage_two.py`.

Stage one (`CSOLStageOne`, method "csol"; single-source clips):
* image ResNet-18 with layer4 stride 1 (14 x 14 at 224 px) -> v_fea [B, h, w, 512]; visual head 1x1 conv
  512 -> 128, ReLU, 1x1 conv 128 -> 128 (no ReLU after it). Audio ResNet-18 (layer4 stride 1 too, as
  `base_model2.py`) on the 1-channel log-mel, global max pool -> a_fea [B, 512]; fc 512 -> 128, ReLU,
  fc 128 -> 128. Both L2-normalised; av_map = sigmoid(w * cos) with one learnable scalar w (a bias-free
  1x1 conv) initialised to 5.
* Localisation loss: BCE between the global max of av_map and 1 for a clip's own audio, 0 for its audio
  paired with another clip's image; the mean over the 2B pairs (`csol_stage_one_loss_terms`).
* After a warm-up epoch (`warmup_epochs=1`, the official `init_num`), every epoch ends with clustering and
  classification (`CSOLClustering`): object features = mean over all h x w cells of v_fea times the
  dilated mask av_map > 0.05 (the masked sum divided by h*w); k-means (scikit-learn, k-means++, K = 11)
  on the L2-normalised object features gives pseudo-labels; the object dictionary is the per-cluster
  mean of the *unnormalised* features. Class heads (Linear 512 -> K on the average-pooled v_fea and on
  a_fea, re-initialised N(0, 0.01) each time) are trained with CE on the pseudo-labels for 3 passes,
  with their own Adam (1e-3, weight decay 1e-4) while the backbones keep learning (Adam 1e-4, 1e-4).

Stage two (`CSOLStageTwo`, method "csol-stage2"; mixtures, initialised from stage one):
* class activation maps m_k = dictionary_k . v_fea (raw 512-d dot product), then one learnable scale and
  bias (the official 1x1x1 Conv3d), multiplied by stage two's own av_map; q = log_softmax(GAP(m));
  p = softmax(audio class logits of the *frozen* stage-one network); loss = KL(p || q) (mean over B x K,
  positive pairs) + 0.5 * 1/2 (BCE_pos + BCE_neg), where BCE_neg labels every cell of the 2 x 2 max-pooled
  av_map of a negative pair 0 (`csol_stage_two_loss_terms`).
* Inference: class-specific maps softmax(3 m) over the K classes (m already multiplied by av_map),
  upsampled to the image (`localize_classes`); `localize` returns the class-agnostic av_map.

Weight decay is the official torch `Adam(weight_decay=1e-4)`: L2 added to the gradients (coupled), not
Keras' decoupled decay.

Choices and deviations (each a parameter where it matters):
* Negative pairs: the official loader draws an extra image of another video for each clip (64 image
  forwards for a batch of 32 pairs); here clip i's audio is paired with clip i+1's image of the same batch
  (same objective, half the image forwards).
* The stage-two object scale and bias start at 1 and 0; torch's default initialisation of that Conv3d
  draws both from U(-1, 1), and a negative draw starts every class map inverted.
* The features for clustering are extracted from the training split in order, without augmentation (the
  official code reuses the shuffled, augmented training loader in eval mode).
* Parameters that get no gradient (the class heads in the localisation step, the localisation layers in
  the classification step) are not updated; the official zeroed gradients still let weight decay shrink
  them.

On small datasets (docs/methods/csol.md), the official schedule can fail.
`warmup_epochs` counts epochs, and one official warm-up epoch of MUSIC is far more steps than an epoch of a
few thousand clips. With clustering from epoch 2, the classification passes kept the localisation from
learning on the stamps demo build. 8 localisation-only epochs and `mask_threshold=0.5` (chosen on its
val_mosaic) gave clusters of purity 0.81. The defaults stay the official 1 and 0.05. Stage two needs its
official learning rate (1e-4, the default): at stage one's 3e-4 its localisation loss moved av_map's peak onto
the frame's border and the class-aware val AUC fell from 0.115 to 0.077.

Official bugs not reproduced: `Location_Net_stage_one(..., cluster=...)` raises a TypeError (the constructor
has no such argument) and both nets hard-code 11 classes; `test_stage_two.py` stops after one batch
(`if i == 1: break`), so its metrics cover 32 samples; `training_stage_two.py` sets `args_test = args;
args_test.mode = 'val'`, which also switches the *training* split to 'val' (aliased arguments). Here K is
a parameter, every sample is scored, and the splits stay apart.
"""

import numpy as np
import keras
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.models.base import AVLocModel, split_inputs, upsample_maps
from keras_avloc.models.clustering import (  # noqa: F401 - re-exported: the clustering stage lives there
    DEFAULT_CLUSTERS, MASK_THRESHOLD, CSOLClustering, cluster_objects, dilate_mask, object_features,
)
from keras_avloc.models.losses_common import l2_normalize

METHODS = {"csol": "CSOLStageOne", "csolstage2": "CSOLStageTwo"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["CSOLStageOne", "CSOLStageTwo", "csol_stage_one_loss_terms", "csol_stage_two_loss_terms",
           "csol_class_loss_terms"]

AV_SCALE_INIT = 5.0
CLASS_MAP_SHARPNESS = 3.0
LOCATION_WEIGHT = 0.5
WEIGHT_DECAY = 1e-4
CLASS_HEAD_LEARNING_RATE = 1e-3
CLASS_PASSES = 3


# ---------------------------------------------------------------------------------------------------
# The formulas, as pure functions of tensors.


def bce_with_logits(logits, label):
    """Binary cross-entropy of sigmoid(logits) against a constant label 0 or 1, elementwise."""
    return ops.softplus(-logits) if label else ops.softplus(logits)


def av_logits(image_maps, audio_vecs, av_scale):
    """w * cos(v[h, w], a) for matched rows: image maps [B, h, w, D], audio [B, D] -> float32 [B, h, w]."""
    image_maps = l2_normalize(ops.cast(image_maps, "float32"), axis=-1)
    audio_vecs = l2_normalize(ops.cast(audio_vecs, "float32"), axis=-1)
    return ops.cast(av_scale, "float32") * ops.einsum("bhwd,bd->bhw", image_maps, audio_vecs)


def negative_images(tensor):
    """The negative partner of each clip: clip i's audio meets clip i+1's image (batch order, wrapping)."""
    return ops.roll(tensor, shift=-1, axis=0)


def adaptive_max_pool_2x2(maps):
    """torch `AdaptiveMaxPool2d((2, 2))` of [B, h, w] -> [B, 4] (cells row-major); bins overlap for odd sizes."""
    height, width = int(maps.shape[1]), int(maps.shape[2])
    rows = [(0, -(-height // 2)), (height // 2, height)]
    cols = [(0, -(-width // 2)), (width // 2, width)]
    cells = [ops.max(maps[:, r0:r1, c0:c1], axis=(1, 2)) for r0, r1 in rows for c0, c1 in cols]
    return ops.stack(cells, axis=1)


def csol_stage_one_loss_terms(image_maps, audio_vecs, av_scale):
    """Stage-one localisation loss.

    Args:
        image_maps: projected visual features [B, h, w, D] (normalised here).
        audio_vecs: projected audio features [B, D] (normalised here).
        av_scale: the scalar w of av_map = sigmoid(w * cos).

    Returns:
        dict: "loss" = 1/2 (mean BCE(max av_map_pos, 1) + mean BCE(max av_map_neg, 0)), "positive_bce",
        "negative_bce", "pair_accuracy" (rounded max av_map equals the label) and "av_logits" [B, h, w]
        (matched pairs).
    """
    positive = av_logits(image_maps, audio_vecs, av_scale)
    negative = av_logits(negative_images(image_maps), audio_vecs, av_scale)
    positive_peak = ops.max(positive, axis=(1, 2))
    negative_peak = ops.max(negative, axis=(1, 2))
    positive_bce = ops.mean(bce_with_logits(positive_peak, 1))
    negative_bce = ops.mean(bce_with_logits(negative_peak, 0))
    accuracy = 0.5 * (ops.mean(ops.cast(positive_peak > 0, "float32")) + ops.mean(ops.cast(negative_peak <= 0, "float32")))
    return {"loss": 0.5 * (positive_bce + negative_bce), "positive_bce": positive_bce, "negative_bce": negative_bce,
            "pair_accuracy": accuracy, "av_logits": positive}


def csol_class_loss_terms(image_logits, audio_logits, labels):
    """Stage-one classification on pseudo-labels: CE(image head) + CE(audio head), each a batch mean.

    Args:
        image_logits, audio_logits: [B, K]; labels: int [B] pseudo-labels, -1 for clips without one (ignored).

    Returns:
        dict with "class_loss", "image_class_accuracy", "audio_class_accuracy" (over labelled clips).
    """
    labels = ops.cast(labels, "int32")
    valid = ops.cast(labels >= 0, "float32")
    count = ops.maximum(ops.sum(valid), 1.0)
    safe = ops.maximum(labels, 0)

    def masked_ce(logits):
        logits = ops.cast(logits, "float32")
        per_clip = ops.logsumexp(logits, axis=-1) - ops.take_along_axis(logits, safe[:, None], axis=-1)[:, 0]
        return ops.sum(per_clip * valid) / count

    def accuracy(logits):
        hits = ops.cast(ops.equal(ops.cast(ops.argmax(logits, axis=-1), "int32"), labels), "float32")
        return ops.sum(hits * valid) / count

    image_loss, audio_loss = masked_ce(image_logits), masked_ce(audio_logits)
    return {"class_loss": image_loss + audio_loss, "image_class_loss": image_loss, "audio_class_loss": audio_loss,
            "image_class_accuracy": accuracy(image_logits), "audio_class_accuracy": accuracy(audio_logits)}


def object_maps(backbone_maps, dictionary, object_scale, object_bias):
    """scale * (dictionary_k . v_fea[h, w]) + bias: [B, h, w, C] x [K, C] -> float32 [B, h, w, K]."""
    raw = ops.einsum("bhwc,kc->bhwk", ops.cast(backbone_maps, "float32"), ops.cast(dictionary, "float32"))
    return ops.cast(object_scale, "float32") * raw + ops.cast(object_bias, "float32")


def csol_stage_two_loss_terms(backbone_maps, image_maps, audio_vecs, av_scale, dictionary, object_scale,
                              object_bias, teacher_logits, location_weight=LOCATION_WEIGHT):
    """Stage-two loss: class-distribution matching plus the localisation BCE.

    Args:
        backbone_maps: v_fea [B, h, w, C] (the ResNet-18 map the dictionary lives in).
        image_maps: projected visual features [B, h, w, D]; audio_vecs: [B, D].
        av_scale: w of av_map = sigmoid(w * cos).
        dictionary: [K, C] object dictionary from stage one.
        object_scale, object_bias: the scalar affine map applied to the raw class activations.
        teacher_logits: [B, K] audio class logits of the frozen stage-one network.
        location_weight: weight of the localisation term (0.5).

    Returns:
        dict: "loss" = KL + location_weight * location, "kl" = mean over B x K of p (log p - log q) with
        p = softmax(teacher_logits) and q = softmax(GAP(m * av_map)), "location" = 1/2 (mean BCE(max av_map_pos,
        1) + mean over the 4B cells of BCE(2x2 max-pooled av_map_neg, 0)), "positive_bce", "negative_bce".
    """
    positive = av_logits(image_maps, audio_vecs, av_scale)
    negative = av_logits(negative_images(image_maps), audio_vecs, av_scale)
    positive_bce = ops.mean(bce_with_logits(ops.max(positive, axis=(1, 2)), 1))
    negative_bce = ops.mean(bce_with_logits(adaptive_max_pool_2x2(negative), 0))
    location = 0.5 * (positive_bce + negative_bce)
    maps = object_maps(backbone_maps, dictionary, object_scale, object_bias) * ops.sigmoid(positive)[..., None]
    log_q = ops.log_softmax(ops.mean(maps, axis=(1, 2)), axis=-1)
    p = ops.softmax(ops.stop_gradient(ops.cast(teacher_logits, "float32")), axis=-1)
    kl = ops.mean(p * (ops.log(ops.maximum(p, 1e-30)) - log_q))
    return {"loss": kl + location_weight * location, "kl": kl, "location": location, "positive_bce": positive_bce,
            "negative_bce": negative_bce}


# ---------------------------------------------------------------------------------------------------
# Models.


def _visual_head(channels, embed_dim, dtype):
    inputs = keras.Input(shape=(None, None, channels), name="image_features")
    hidden = keras.layers.Conv2D(embed_dim, 1, activation="relu", name="visual_conv_1", dtype=dtype)(inputs)
    outputs = keras.layers.Conv2D(embed_dim, 1, name="visual_conv_2", dtype=dtype)(hidden)
    return keras.Model(inputs, outputs, name="visual_head")


def _audio_head(channels, embed_dim, dtype):
    inputs = keras.Input(shape=(channels,), name="audio_features")
    hidden = keras.layers.Dense(embed_dim, activation="relu", name="audio_fc_1", dtype=dtype)(inputs)
    outputs = keras.layers.Dense(embed_dim, name="audio_fc_2", dtype=dtype)(hidden)
    return keras.Model(inputs, outputs, name="audio_head")


def _class_head(num_clusters, name, dtype):
    return keras.layers.Dense(num_clusters, name=name, dtype=dtype,
                              kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01), bias_initializer="zeros")


def _compose(first, second, name):
    """The functional model second(first(x)) sharing both models' layers."""
    inputs = keras.Input(shape=first.input_shape[1:])
    return keras.Model(inputs, second(first(inputs)), name=name)


class CSOLBase(AVLocModel):
    """Encoders shared by both stages of CSOL and by IEr, which builds on them (see the module docstring)."""

    frontend = "csol"
    default_clip_seconds = 1.0
    default_learning_rate = 1e-4
    upsample_align_corners = False  # test_stage_two.py resizes with cv2 (half-pixel centres)

    def __init__(self, num_clusters=DEFAULT_CLUSTERS, embed_dim=128, backbone_kwargs=None, av_scale_init=AV_SCALE_INIT,
                 weight_decay=WEIGHT_DECAY, name="csol", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_clusters = int(num_clusters)
        self.embed_dim = int(embed_dim)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.av_scale_init = float(av_scale_init)
        self.weight_decay = float(weight_decay)
        dtype = self.dtype_policy
        self.image_backbone = encoders.resnet18_backbone(3, 1, "image_resnet18", dtype=dtype, **self.backbone_kwargs)
        channels = int(self.image_backbone.output_shape[-1])
        self.feature_channels = channels
        self.visual_head = _visual_head(channels, self.embed_dim, dtype)
        self.image_encoder = _compose(self.image_backbone, self.visual_head, "image_encoder")
        self.audio_backbone = encoders.resnet18_backbone(1, 1, "audio_resnet18", dtype=dtype, **self.backbone_kwargs)
        self.audio_features = encoders.audio_encoder(self.audio_backbone, pooling="max", name="audio_features",
                                                     dtype=dtype)
        self.audio_head = _audio_head(channels, self.embed_dim, dtype)
        self.audio_encoder = _compose(self.audio_features, self.audio_head, "audio_encoder")
        self.av_scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.av_scale_init),
                                        name="av_scale", dtype="float32")
        self.dictionary = self.add_weight(shape=(self.num_clusters, channels), initializer="zeros", trainable=False,
                                          name="dictionary", dtype="float32")

    def call(self, inputs, training=False):
        """Encodes a batch.

        Returns:
            dict: "image_features" v_fea [B, h, w, C], "image_maps" [B, h, w, D], "audio_features" a_fea [B, C],
            "audio_vecs" [B, D] (raw, un-normalised).
        """
        images, audio = split_inputs(inputs)
        image_features = self.image_backbone(images, training=training)
        audio_features = self.audio_features(audio, training=training)
        return {"image_features": image_features, "image_maps": self.visual_head(image_features, training=training),
                "audio_features": audio_features, "audio_vecs": self.audio_head(audio_features, training=training)}

    def copy_parts(self, source, source_class, what, parts, fields=("num_clusters", "embed_dim", "feature_channels"),
                   needs_clustering=True):
        """Initialises this model from a trained one: checks its class, its `fields` and (if `needs_clustering`)
        that it has clustered, copies the weights of each (mine, theirs) attribute pair, the av scale and the
        dictionary.

        Raises:
            ValueError: another class, other settings, or no clustering yet.
        """
        if not isinstance(source, source_class):
            raise ValueError(f"{what} starts from a {source_class.display_name} model ({source_class.__name__}), got "
                             f"{type(source).__name__}.")
        mine = tuple(getattr(self, field) for field in fields)
        theirs = tuple(getattr(source, field) for field in fields)
        if mine != theirs:
            raise ValueError(f"the {source_class.display_name} model has ({', '.join(fields)}) = {theirs}, {what} "
                             f"{mine}; build {what} with the same settings.")
        if needs_clustering and float(ops.convert_to_numpy(source.clusterings)) < 1:
            raise ValueError(f"the {source_class.display_name} model has not clustered yet (no object dictionary): "
                             f"train it for more than warmup_epochs = {source.warmup_epochs} epochs.")
        for mine_part, theirs_part in parts:
            getattr(self, mine_part).set_weights(getattr(source, theirs_part).get_weights())
        self.av_scale.assign(source.av_scale)
        self.dictionary.assign(source.dictionary)

    def similarity_map(self, image_maps, audio_vecs):
        """av_map = sigmoid(w * cos) [B, h, w] of matched pairs."""
        return ops.sigmoid(av_logits(image_maps, audio_vecs, self.av_scale))

    def cluster_ids(self, images, audio):
        """Each clip's cluster: its object feature (`object_features`; stage one's `mask_threshold`, stage two
        0.05) goes to the dictionary entry of highest cosine (k-means ran on L2-normalised features).
        numpy int [B]."""
        outputs = self({"image": ops.convert_to_tensor(images), "audio": ops.convert_to_tensor(audio)}, training=False)
        av_map = self.similarity_map(outputs["image_maps"], outputs["audio_vecs"])
        threshold = getattr(self, "mask_threshold", MASK_THRESHOLD)  # stage two: the official 0.05
        features = l2_normalize(object_features(outputs["image_features"], av_map, threshold), axis=-1)
        scores = ops.matmul(features, ops.transpose(l2_normalize(self.dictionary, axis=-1)))
        return ops.convert_to_numpy(ops.argmax(scores, axis=-1)).astype(np.int64)

    def get_config(self):
        config = super().get_config()
        config.update({"num_clusters": self.num_clusters, "embed_dim": self.embed_dim,
                       "backbone_kwargs": self.backbone_kwargs, "av_scale_init": self.av_scale_init,
                       "weight_decay": self.weight_decay})
        return config


@keras.saving.register_keras_serializable(package="keras_avloc")
class CSOLStageOne(CSOLBase):
    """CSOL stage one: sounding-area localisation, clustering into an object dictionary, class heads.

    Train with `avloc train --method csol` (or `keras_avloc.training.train("csol", ...)`), which adds the
    clustering-and-classification callback (`training_callbacks`); a bare `model.fit` trains the
    localisation objective only.

    Args:
        num_clusters: K, the dictionary size and class-head width (11, the MUSIC instrument count).
        embed_dim: projection size of the localisation heads (128).
        backbone_kwargs: extra ResNet-18 arguments (e.g. {"width": 16}).
        av_scale_init: initial w of sigmoid(w * cos) (5).
        weight_decay: coupled L2 of the backbone optimizer and the class heads' optimizer (1e-4).
        mask_threshold: av_map threshold of the object masks (0.05).
        warmup_epochs: localisation-only epochs before the first clustering (1).
        class_passes: classification passes over the training split after each clustering (3).
        class_learning_rate: the class heads' Adam learning rate (1e-3).
        kmeans_restarts: k-means++ restarts per clustering (10).
        **kwargs: `eval_settings`, `name`, `dtype`.

    Example:
    >>> model = CSOLStageOne(num_clusters=11)
    >>> model.compile()  # Adam(1e-4) with coupled weight decay 1e-4
    >>> from keras_avloc.training import train
    >>> model, _ = train("csol", "datasets/stamps", "runs/csol1", epochs=15, clip_seconds=1.0)  # doctest: +SKIP
    """

    tiny_config = {"backbone_kwargs": {"width": 8}, "num_clusters": 3, "embed_dim": 8}

    loss_term_names = ("loss", "positive_bce", "negative_bce", "pair_accuracy")
    next_stage = "csolstage2"
    # In the demo (docs/demo.md, "Every method"): 16 epochs, 12 of them localisation-only before the 4 clusterings (12
    # epochs with 8 localisation-only: val AUC 0.320 against 0.336), with LVS's ambience: with one class pass per
    # clustering its map otherwise lost 30% of its val AUC on unseen recordings. K = the demo's 8 classes; mask
    # av > 0.5 (chosen on val_mosaic); one class pass per clustering instead of 3 (chosen on val: the passes train
    # the image network on whole-frame pseudo-labels, and 3 of them moved the single-source map off the objects).
    # The demo scores the stage-one av map (val AUC 0.329, pointing game 0.537) rather than the stage two's (0.099 /
    # 0.006: trained on mosaics, its localisation loss moves the map off the objects; docs/methods/csol.md).
    demo_recipe = {"order": 4, "training": {"epochs": 16, "augment": "ambience"},
                   "settings": {"num_clusters": 8, "warmup_epochs": 12, "mask_threshold": 0.5, "class_passes": 1},
                   "tiny_settings": {"num_clusters": 4, "warmup_epochs": 0, "kmeans_restarts": 1}, "scored_stage": 1}
    display_name = "CSOL stage one"
    needs_feature_pass = True

    def __init__(self, num_clusters=DEFAULT_CLUSTERS, embed_dim=128, backbone_kwargs=None, av_scale_init=AV_SCALE_INIT,
                 weight_decay=WEIGHT_DECAY, mask_threshold=MASK_THRESHOLD, warmup_epochs=1, class_passes=CLASS_PASSES,
                 class_learning_rate=CLASS_HEAD_LEARNING_RATE, kmeans_restarts=10, name="csol", **kwargs):
        super().__init__(num_clusters, embed_dim, backbone_kwargs, av_scale_init, weight_decay, name=name, **kwargs)
        self.mask_threshold = float(mask_threshold)
        self.warmup_epochs = int(warmup_epochs)
        self.class_passes = int(class_passes)
        self.class_learning_rate = float(class_learning_rate)
        self.kmeans_restarts = int(kmeans_restarts)
        dtype = self.dtype_policy
        self.image_class_head = _class_head(self.num_clusters, "image_class_head", dtype)
        self.audio_class_head = _class_head(self.num_clusters, "audio_class_head", dtype)
        self.image_class_head.build((None, self.feature_channels))
        self.audio_class_head.build((None, self.feature_channels))
        self.clusterings = self.add_weight(shape=(), initializer="zeros", trainable=False, name="clusterings",
                                           dtype="float32")

    def compute_batch_terms(self, x, y, training):
        outputs = self.global_batch(self(x, training=training))
        return csol_stage_one_loss_terms(outputs["image_maps"], outputs["audio_vecs"], self.av_scale)

    def class_logits(self, outputs):
        """(image logits, audio logits) [B, K] of the class heads on encoded outputs."""
        pooled = ops.mean(ops.cast(outputs["image_features"], "float32"), axis=(1, 2))
        return self.image_class_head(pooled), self.audio_class_head(ops.cast(outputs["audio_features"], "float32"))

    # ------------------------------------------------------------- clustering and classification
    def extract_object_features(self, images, audio):
        """Object features [B, C] of a batch (inference mode; see `object_features`)."""
        outputs = self({"image": images, "audio": audio}, training=False)
        av_map = self.similarity_map(outputs["image_maps"], outputs["audio_vecs"])
        return object_features(outputs["image_features"], av_map, self.mask_threshold)

    # Hooks of the clustering callback (`CSOLClustering`); IEr extends them.
    clustering_log_keys = ()
    class_step_terms = ()

    def clustering_features(self, images, audio):
        """Per-clip features of the feature pass: {"object": object features [B, C]} (k-means runs on these)."""
        return {"object": self.extract_object_features(images, audio)}

    def align_clusters(self, labels, dictionary, sizes):
        """Renumbers a new clustering before it is stored (CSOL: as k-means numbered it; its class heads restart
        every epoch). Returns (labels, dictionary, sizes)."""
        return labels, dictionary, sizes

    def after_clustering(self, labels, features, epoch):
        """Called after each clustering with the pseudo-labels [N] and the feature pass's arrays; returns extra
        epoch logs. CSOL: nothing more to do."""
        return {}

    def class_step_options(self, rng):
        """Keyword tensors for the next `class_step` (CSOL: none)."""
        return {}

    def head_variables(self):
        return self.image_class_head.trainable_variables + self.audio_class_head.trainable_variables

    def reset_class_heads(self, seed):
        """Fresh class heads (N(0, 0.01) kernels, zero biases) and a fresh head optimizer, as every epoch of
        the official code."""
        generator = np.random.default_rng(int(seed))
        for head in (self.image_class_head, self.audio_class_head):
            head.kernel.assign(generator.normal(0.0, 0.01, size=head.kernel.shape).astype("float32"))
            head.bias.assign(np.zeros(head.bias.shape, "float32"))
        optimizer = self.__dict__.get("_head_optimizer")
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=self.class_learning_rate)
            optimizer.build(self.head_variables())
            object.__setattr__(self, "_head_optimizer", optimizer)  # a per-epoch scratch state, not saved
        for variable in optimizer.variables:
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def class_step_loss_terms(self, x, labels):
        """The terms of one classification step (CSOL: `csol_class_loss_terms`); "step_loss" (if given, else
        "class_loss") is minimised."""
        outputs = self(x, training=True)
        image_logits, audio_logits = self.class_logits(outputs)
        return csol_class_loss_terms(image_logits, audio_logits, labels)

    def class_step(self, x, labels, **options):
        """One classification step on pseudo-labels: heads with their own Adam, the rest with the model's;
        `options` (`class_step_options`) go to `class_step_loss_terms`."""
        import tensorflow as tf

        heads = self.head_variables()
        head_ids = {id(v) for v in heads}
        others = [v for v in self.trainable_variables if id(v) not in head_ids]
        with tf.GradientTape() as tape:
            terms = self.class_step_loss_terms(x, labels, **options)
        gradients = tape.gradient(terms.get("step_loss", terms["class_loss"]), heads + others)
        head_gradients = [g + self.weight_decay * v for g, v in zip(gradients[: len(heads)], heads)]
        self.__dict__["_head_optimizer"].apply(head_gradients, heads)
        self.apply_gradients(gradients[len(heads):], others)
        return terms

    def training_callbacks(self, dataset, feature_dataset, out_dir, seed=None):
        """The clustering-and-classification callback `keras_avloc.training.train` runs before the
        checkpoints at the end of every epoch."""
        return [CSOLClustering(dataset, feature_dataset, out_dir=out_dir, seed=0 if seed is None else int(seed))]

    def get_config(self):
        config = super().get_config()
        config.update({"mask_threshold": self.mask_threshold, "warmup_epochs": self.warmup_epochs,
                       "class_passes": self.class_passes, "class_learning_rate": self.class_learning_rate,
                       "kmeans_restarts": self.kmeans_restarts})
        return config


@keras.saving.register_keras_serializable(package="keras_avloc")
class CSOLStageTwo(CSOLBase):
    """CSOL stage two: class-aware localisation in mixtures with the stage-one dictionary.

    Starts from a trained `CSOLStageOne` (`initialize_from`; `avloc train --method csol --stage 2
    --init-from runs/csol1/model.keras`), whose audio network and audio class head become the frozen
    teacher of the audio class distribution.

    Args:
        num_clusters, embed_dim, backbone_kwargs, av_scale_init, weight_decay: as `CSOLStageOne` (must match
            the stage-one model).
        location_weight: weight of the localisation BCE (0.5).
        class_map_sharpness: the 3 of softmax(3 m) at inference.
        **kwargs: `eval_settings`, `name`, `dtype`.

    Example:
    >>> stage_two = CSOLStageTwo(num_clusters=11)
    >>> stage_two.initialize_from(stage_one)  # doctest: +SKIP
    >>> class_maps = stage_two.localize_classes(images, audio)  # [B, K, H, W]  # doctest: +SKIP
    """

    tiny_config = {"backbone_kwargs": {"width": 8}, "num_clusters": 3, "embed_dim": 8}

    loss_term_names = ("loss", "kl", "location", "positive_bce", "negative_bce")
    display_name = "CSOL"
    demo_recipe = {"training": {"epochs": 5, "learning_rate": 1e-4}}  # the demo's stage two, at the official 1e-4
    init_from_method = "csol"
    inherited_kwargs = ("num_clusters", "embed_dim", "backbone_kwargs", "av_scale_init", "weight_decay")
    default_split = "train_mosaic"

    def __init__(self, num_clusters=DEFAULT_CLUSTERS, embed_dim=128, backbone_kwargs=None, av_scale_init=AV_SCALE_INIT,
                 weight_decay=WEIGHT_DECAY, location_weight=LOCATION_WEIGHT, class_map_sharpness=CLASS_MAP_SHARPNESS,
                 name="csol_stage2", **kwargs):
        super().__init__(num_clusters, embed_dim, backbone_kwargs, av_scale_init, weight_decay, name=name, **kwargs)
        self.location_weight = float(location_weight)
        self.class_map_sharpness = float(class_map_sharpness)
        dtype = self.dtype_policy
        self.object_scale = self.add_weight(shape=(), initializer="ones", name="object_scale", dtype="float32")
        self.object_bias = self.add_weight(shape=(), initializer="zeros", name="object_bias", dtype="float32")
        self.teacher_audio = encoders.audio_encoder(
            encoders.resnet18_backbone(1, 1, "teacher_audio_resnet18", dtype=dtype, **self.backbone_kwargs),
            pooling="max", name="teacher_audio_features", dtype=dtype)
        self.teacher_head = _class_head(self.num_clusters, "teacher_audio_class_head", dtype)
        self.teacher_head.build((None, self.feature_channels))
        self.teacher_audio.trainable = False
        self.teacher_head.trainable = False

    def initialize_from(self, stage_one):
        """Copies a trained stage one: encoders, av scale and dictionary, and its audio network plus audio
        class head as the frozen teacher.

        Raises:
            ValueError: the stage-one model does not match (K, widths) or has not clustered yet.
        """
        self.copy_parts(stage_one, CSOLStageOne, "CSOL stage two", (
            ("image_backbone", "image_backbone"), ("visual_head", "visual_head"), ("audio_features", "audio_features"),
            ("audio_head", "audio_head"), ("teacher_audio", "audio_features"), ("teacher_head", "audio_class_head")))

    def teacher_logits(self, audio):
        """Audio class logits [B, K] of the frozen stage-one network."""
        return self.teacher_head(ops.cast(self.teacher_audio(audio, training=False), "float32"))

    def compute_batch_terms(self, x, y, training):
        _, audio = split_inputs(x)
        outputs, teacher = self.global_batch((self(x, training=training), self.teacher_logits(audio)))
        return csol_stage_two_loss_terms(outputs["image_features"], outputs["image_maps"], outputs["audio_vecs"],
                                         self.av_scale, self.dictionary, self.object_scale, self.object_bias,
                                         teacher, self.location_weight)

    def class_maps(self, images, audio):
        """softmax(3 m) over the K classes at feature resolution [B, K, h, w] (m multiplied by av_map)."""
        outputs = self({"image": images, "audio": audio}, training=False)
        av_map = self.similarity_map(outputs["image_maps"], outputs["audio_vecs"])
        maps = object_maps(outputs["image_features"], self.dictionary, self.object_scale, self.object_bias)
        maps = ops.softmax(self.class_map_sharpness * maps * av_map[..., None], axis=-1)
        return ops.transpose(maps, (0, 3, 1, 2))

    def localize_classes(self, images, audio, image_size=None):
        """Class-specific heatmaps.

        Args:
            images: float [B, H, W, 3], ImageNet-normalised; audio: [B, F, T, 1] log-mels.
            image_size: output (H, W); default the input size.

        Returns:
            numpy float32 [B, K, H, W] in [0, 1] (softmax over the K classes at each location).
        """
        images = ops.convert_to_tensor(images)
        size = tuple(int(side) for side in (image_size or (images.shape[1], images.shape[2])))
        graph = self.__dict__.get("_compiled_classes")
        if graph is None:
            import tensorflow as tf

            def run(images, audio, size):
                maps = self.class_maps(images, audio)
                batch, classes = ops.shape(maps)[0], ops.shape(maps)[1]
                flat = ops.reshape(maps, (-1, maps.shape[2], maps.shape[3]))
                return ops.reshape(upsample_maps(flat, size), (batch, classes, size[0], size[1]))

            graph = tf.function(run)
            object.__setattr__(self, "_compiled_classes", graph)
        return ops.convert_to_numpy(graph(images, ops.convert_to_tensor(audio), size))

    def cluster_probabilities(self, audio):
        """softmax of the frozen stage-one audio class head [B, K] (numpy): which clusters the audio holds."""
        return ops.convert_to_numpy(ops.softmax(self.teacher_logits(ops.convert_to_tensor(audio)), axis=-1))

    def get_config(self):
        config = super().get_config()
        config.update({"location_weight": self.location_weight, "class_map_sharpness": self.class_map_sharpness})
        return config
