"""LVS: "Localizing Visual Sounds the Hard Way" (Chen et al., CVPR 2021) as a Keras 3 model.

Follows the official PyTorch code (hche11/Localizing-Visual-Sounds-the-Hard-Way, model.py):

* image: ResNet-18 with layer4 stride 1 -> [B, 14, 14, 512] at 224 px; audio: ResNet-18 on the
  1-channel log spectrogram [B, 257, 200, 1] (layer4 stride 1), global MAX pool -> [B, 512];
  both L2-normalised along channels.
* A = cosine map of matched pairs [B, h, w]; A0 = all pairs [B, B, h, w].
* Trimap: Pos = sigmoid((A - eps_p) / tau), Neg = 1 - sigmoid((A - eps_n) / tau),
  PosAll = sigmoid((A0 - eps_p) / tau).
* Each similarity is a soft-masked average, *sum over the map divided by the mask sum* (not a plain
  mean): s_pos = sum(Pos*A)/sum(Pos), s_easy[n, k] = sum(PosAll*A0)/sum(PosAll),
  s_hard = sum(Neg*A)/sum(Neg).
* logits = [s_pos, s_easy[n, k != n], s_hard] / 0.07; cross-entropy with the positive (index 0) as
  the target, averaged over the batch.

Fixes relative to a known faulty Keras port: logits are *divided* by the 0.07 temperature; every
negative enters the softmax denominator (proper log-sum-exp); audio is max-pooled; 224-px input with a
stride-1 layer4 instead of 448-px input; ImageNet normalisation is done by the data pipeline.

Diagonal of the easy negatives: the official code multiplies the [B, B] easy-negative block by
(1 - 100 I), which turns the positive pair's own entry into -99 s. That removes it from the softmax
only when s > 0; for a negative similarity it becomes a large *positive* logit. Here the diagonal is
masked out (`diagonal="mask"`, the default); `diagonal="official"` reproduces the original trick.
Both give the same loss whenever the diagonal similarities are positive (tested).
"""

import keras
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.models.base import AVLocModel
from keras_avloc.models.losses_common import cross_entropy_with_integer_targets, l2_normalize

METHODS = {"lvs": "LVS"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["LVS", "lvs_loss", "lvs_loss_terms"]

_MASKED_LOGIT = -1e9


def lvs_loss_terms(
    image_maps,
    audio_vecs,
    epsilon_positive=0.65,
    epsilon_negative=0.4,
    tau=0.03,
    temperature=0.07,
    hard_negatives=True,
    trimap=True,
    diagonal="mask",
):
    """All intermediate quantities of the LVS loss.

    Args:
        image_maps: raw image features [B, h, w, C] (normalised here along C).
        audio_vecs: raw audio features [B, C] (normalised here).
        epsilon_positive: eps_p, the positive-region threshold (0.65).
        epsilon_negative: eps_n, the negative-region threshold (0.4; used when `trimap`).
        tau: sigmoid sharpness of the soft thresholds (0.03).
        temperature: logit temperature; logits are divided by it (0.07).
        hard_negatives: include the hard-negative (background) logit (official `Neg=True`).
        trimap: Neg from eps_n (True) or from eps_p (False, i.e. Neg = 1 - Pos).
        diagonal: "mask" removes the own pair from the easy negatives; "official" multiplies the
            easy-negative block by (1 - 100 I) as the original code.

    Returns:
        dict with "loss" (scalar), "logits" [B, K], "similarity" A [B, h, w], "pos" / "neg"
        soft masks [B, h, w], and batch means "positive", "easy_negative", "hard_negative".
    """
    if diagonal not in ("mask", "official"):
        raise ValueError(f"diagonal must be 'mask' or 'official', got {diagonal!r}")
    image_maps = l2_normalize(image_maps, axis=-1)
    audio_vecs = l2_normalize(audio_vecs, axis=-1)
    batch = ops.shape(image_maps)[0]

    sim_map = ops.einsum("bhwc,bc->bhw", image_maps, audio_vecs)
    sim_all = ops.einsum("nhwc,kc->nkhw", image_maps, audio_vecs)

    pos = ops.sigmoid((sim_map - epsilon_positive) / tau)
    # 1 - sigmoid(z) written as sigmoid(-z): same value, no float32 cancellation where A >> eps_n.
    neg = ops.sigmoid(-(sim_map - (epsilon_negative if trimap else epsilon_positive)) / tau)
    pos_all = ops.sigmoid((sim_all - epsilon_positive) / tau)

    def soft_average(mask, values, axes):
        return ops.sum(mask * values, axis=axes) / ops.maximum(ops.sum(mask, axis=axes), 1e-30)

    positive = soft_average(pos, sim_map, (1, 2))  # [B]
    easy = soft_average(pos_all, sim_all, (2, 3))  # [B, B]
    hard = soft_average(neg, sim_map, (1, 2))  # [B]

    eye = ops.eye(batch, dtype="float32")
    if diagonal == "official":
        easy_logits = easy * (1.0 - 100.0 * eye) / temperature
    else:
        easy_logits = ops.where(eye > 0, _MASKED_LOGIT, easy / temperature)

    columns = [positive[:, None] / temperature, easy_logits]
    if hard_negatives:
        columns.append(hard[:, None] / temperature)
    logits = ops.concatenate(columns, axis=1)
    loss = cross_entropy_with_integer_targets(logits, ops.zeros([batch], "int32"))

    off_diagonal = 1.0 - eye
    easy_mean = ops.sum(easy * off_diagonal) / ops.maximum(ops.sum(off_diagonal), 1.0)
    return {
        "loss": loss,
        "logits": logits,
        "similarity": sim_map,
        "pos": pos,
        "neg": neg,
        "positive": ops.mean(positive),
        "easy_negative": easy_mean,
        "hard_negative": ops.mean(hard),
    }


def lvs_loss(image_maps, audio_vecs, **kwargs):
    """Scalar LVS batch loss from raw image maps [B, h, w, C] and audio vectors [B, C].

    Args:
        image_maps: raw channels-last image feature maps [B, h, w, C].
        audio_vecs: raw audio vectors [B, C].
        **kwargs: see `lvs_loss_terms` (epsilon_positive=0.65, epsilon_negative=0.4, tau=0.03,
            temperature=0.07, hard_negatives=True, trimap=True, diagonal="mask").

    Returns:
        Scalar float32 loss.

    Example:
    >>> import numpy as np
    >>> loss = lvs_loss(np.random.rand(4, 14, 14, 512), np.random.rand(4, 512))
    """
    return lvs_loss_terms(image_maps, audio_vecs, **kwargs)["loss"]


@keras.saving.register_keras_serializable(package="keras_avloc")
class LVS(AVLocModel):
    """LVS model (Chen et al., CVPR 2021).

    Args:
        epsilon_positive: eps_p (0.65).
        epsilon_negative: eps_n (0.4).
        tau: trimap sigmoid sharpness (0.03).
        temperature: logit temperature (0.07).
        hard_negatives: use the hard-negative logit (True).
        diagonal: "mask" (default) or "official"; see the module docstring.
        image_dropout: element-wise dropout on the image feature maps in training (0, as the official code; not
            an LVS setting: SLAVC's remedy for maps that ignore the audio, an option here).
        backbone_kwargs: extra keyword arguments for both ResNet-18s (e.g. `{"width": 16}`).
        name: model name.
        **kwargs: `eval_settings` and `keras.Model` arguments such as `dtype` (see `AVLocModel`).

    Example:
    >>> model = LVS()
    >>> model.compile()  # Adam(1e-4), the paper's setting
    >>> model.fit(make_dataset(root, "train", training=True), epochs=1)  # doctest: +SKIP
    >>> heatmaps = model.localize(images, spectrograms)  # doctest: +SKIP
    """

    tiny_config = {"backbone_kwargs": {"width": 8}}

    loss_term_names = ("loss", "positive", "easy_negative", "hard_negative")
    default_learning_rate = 1e-4
    upsample_align_corners = False
    display_name = "LVS"
    # The demo adds ambience to its augmentation for LVS: another scene's sound as background halved its AUC loss on
    # unseen recordings (val_unseen against val: 12.4% -> 6.8%) but cost EZ-VSL 0.018 of val AUC (docs/demo.md).
    demo_recipe = {"order": 1, "default": True, "training": {"augment": "ambience"}, "pointing_target": 0.8,
                   "prompted_reference": True}  # the sound-only reference of DenseAV's speech table

    def __init__(
        self,
        epsilon_positive=0.65,
        epsilon_negative=0.4,
        tau=0.03,
        temperature=0.07,
        hard_negatives=True,
        diagonal="mask",
        image_dropout=0.0,
        backbone_kwargs=None,
        name="lvs",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.epsilon_positive = epsilon_positive
        self.epsilon_negative = epsilon_negative
        self.tau = tau
        self.temperature = temperature
        self.hard_negatives = hard_negatives
        self.diagonal = diagonal
        if not 0.0 <= float(image_dropout) < 1.0:
            raise ValueError(f"LVS: image_dropout must be in [0, 1), got {image_dropout!r}.")
        self.image_dropout = float(image_dropout)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        dtype = self.dtype_policy
        networks = encoders.stride1_resnet18_networks(dtype, **self.backbone_kwargs)
        self.image_backbone, self.audio_backbone, self.audio_encoder = networks
        self.image_encoder = self.image_backbone
        self.feature_dropout = (keras.layers.Dropout(self.image_dropout, name="image_dropout", dtype=dtype)
                                if self.image_dropout else None)

    def encode_image(self, images, training=False):
        """Image feature maps [B, h, w, C] (with `image_dropout` applied in training)."""
        features = self.image_encoder(images, training=training)
        return self.feature_dropout(features, training=training) if self.feature_dropout else features

    def compute_loss_terms(self, image_maps, audio_vecs):
        return lvs_loss_terms(
            image_maps,
            audio_vecs,
            epsilon_positive=self.epsilon_positive,
            epsilon_negative=self.epsilon_negative,
            tau=self.tau,
            temperature=self.temperature,
            hard_negatives=self.hard_negatives,
            diagonal=self.diagonal,
        )

    OFFICIAL_EVAL_SETTINGS = {"image_size": 224, "clip_seconds": 10.0, "image_mode": "crop", "strict_median": True}
    """The official VGG-SS / Flickr test settings (test.py, datasets/dataloader.py, utils.py of the LVS
    repository): Resize(224, bicubic) + CenterCrop(224), the first 10 s of audio (tiled when shorter),
    heatmaps resized with cv2 INTER_LINEAR and binarised with `>` at the median."""

    def load_official_checkpoint(self, path, state=None):
        """Loads the official LVS checkpoint (`lvs_vggss.pth.tar`, or an `.npz` of its state dict).

        The PyTorch file holds {"model_state_dict": {"module.imgnet.*", "module.audnet.*"}}; the audio
        network's 1-channel stem is `audnet.conv1_a` (its unused 3-channel `conv1` and `conv1_flow`
        are skipped by `keras_avloc.backbones.load_torch_state_dict`).

        Args:
            path: `.pth` / `.pth.tar` (needs torch) or `.npz` with the same keys.
            state: its state dict when already read (`path` then only names it).

        Returns:
            dict {"image": report, "audio": report} from `load_torch_state_dict`.
        """
        from keras_avloc.backbones import load_torch_state_dict, read_state_dict

        state = read_state_dict(path) if state is None else state
        _check_official_keys(path, state)
        return {
            "image": load_torch_state_dict(self.image_backbone, state, prefix="imgnet."),
            "audio": load_torch_state_dict(self.audio_backbone, state, prefix="audnet."),
        }

    @classmethod
    def from_official_checkpoint(cls, path, **kwargs):
        """A complete LVS model with the official checkpoint's weights and the official test settings
        (`OFFICIAL_EVAL_SETTINGS`), ready for `model.save("model.keras")`, `avloc evaluate` and
        `avloc localize`. The backbone width is read from the checkpoint.

        Args:
            path: the official `.pth.tar` (needs torch) or an `.npz` of its state dict.
            **kwargs: other LVS constructor arguments.

        Returns:
            (model, report) with `report` as in `load_official_checkpoint`.
        """
        from keras_avloc.backbones import read_state_dict
        from keras_avloc.backbones.porting import official_model

        state = read_state_dict(path)
        _check_official_keys(path, state)  # an LVS-specific message before the generic ones
        return official_model(cls, path, state=state, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "epsilon_positive": self.epsilon_positive,
                "epsilon_negative": self.epsilon_negative,
                "tau": self.tau,
                "temperature": self.temperature,
                "hard_negatives": self.hard_negatives,
                "diagonal": self.diagonal,
                "image_dropout": self.image_dropout,
                "backbone_kwargs": self.backbone_kwargs,
            }
        )
        return config


def _check_official_keys(path, state):
    missing = [prefix for prefix in ("imgnet.", "audnet.") if not any(key.startswith(prefix) for key in state)]
    if missing:
        from keras_avloc.backbones.porting import StateDictMismatchError

        raise StateDictMismatchError(f"{path} is not an LVS checkpoint: no keys start with {', '.join(missing)} "
                                     "(expected the official lvs_vggss.pth.tar / lvs_soundnet.pth.tar layout).")
