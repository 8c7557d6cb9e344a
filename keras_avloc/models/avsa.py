"""AVC and AVSA (Morgado, Li & Vasconcelos, "Learning Representations from Audio-Visual Spatial Alignment",
NeurIPS 2020): self-supervised video and spatial-audio representations from 360° video with ambisonics.

Both methods see *viewpoints* of a 360° clip (`keras_avloc.data.viewpoints`): a perspective crop video
[F, S, S, 3] and the first-order ambisonic field rotated so that the viewpoint is the front, as log-mels
[T, 128, 4]. Constants follow the official code (pedro-morgado/AVSpatialAlignment):

* video: R(2+1)D-18 (`models/video.py`, `models/network_blocks.py BasicR2P1DBlock`), 8 x 112 x 112 ->
  global max pool -> 512. The official block keeps the output width between its spatial (1, 3, 3) and temporal
  (3, 1, 1) convolutions, its stem is a full (3, 7, 7) convolution, and it has about 15 M parameters;
  `video_block="r2plus1d"` builds Tran et al.'s R(2+1)D-18 instead (the factorised stem 3 -> 45 -> 64 and
  the parameter-matching intermediate width, as torchvision's `r2plus1d_18`, 31.3 M without its classifier).
* audio: the depth-10 2D CNN (`models/audio.py Conv2D`): a 7 x 7 / 2 convolution and four plain two-layer blocks
  (64, 128 / 2, 256 / 2, 512), global max pool -> 512, over the 4-channel log-mel (time x mel), z-normalised
  per mel band with statistics of the training split (`mel_stats`, as the official `MelSpectDB-...-norm-stats`).
* AVC (`configs/main/avsa/InstDisc.yaml`, `criterions/contrastive.py ContrastiveLoss`): one viewpoint per clip,
  128-d linear heads on each modality, cross-modal InfoNCE with temperature 0.07 in both directions (the
  other clips of the batch are the negatives), averaged.
* AVSA (`configs/main/avsa/Cur-Loc4-TransfD2.yaml`, `criterions/video2audio_seq.py`, `criterions/transformers.py`):
  four viewpoints per clip; a video->audio and an audio->video translation transformer over the sequence of
  viewpoints (depth 2, width 512, expansion 4, dropout 0.1, single-head attention scaled by sqrt(512),
  post-LayerNorm, ReLU outputs, no positional input); four 128-d heads (video, audio, predicted video,
  predicted audio). Viewpoint-level contrast ("easy+hard"): the prediction for viewpoint j of clip i is scored
  against the clip's own four viewpoints (three hard negatives) and viewpoint j of every other clip (easy
  negatives), temperature 0.07; A2V and V2A are averaged. Curriculum: AVSA starts from a trained AVC model
  (`avloc train --method avsa --init-from RUN/model.keras`), as the official "Cur" schedule (50 + 50 epochs).
* Optimiser: Adam, lr 1e-4, weight decay 1e-5 coupled to the gradient (torch `Adam(weight_decay=...)`).

The tracked accuracies are the official ones: AVC-Acc (the positive beats every easy negative) and AVSA-Acc
(the positive is at least every hard negative).

Official bugs not reproduced (each is fixed where it lives): the training flip mirrors the video but not the sound
field (`keras_avloc.data.sphere_dataset` mirrors both); `utils/video360.py rotate_ambix` rotates in an order that
brings a viewpoint to the front only at elevation 0 (`keras_avloc.spatial.ambisonics.rotation_to_front`); the NFOV
bilinear weights turn negative on the panorama's seam (`keras_avloc.spatial.geometry`).

Beyond the paper, `viewpoint_scores` says how well a viewpoint's audio matches its video; sweeping viewpoints over
the sphere gives the "where does this sound come from" map of `keras_avloc.evaluation.sphere`.
"""

import math

import numpy as np
import keras
from keras import ops

from keras_avloc.layers.normalization import FusedBatchNormalization
from keras_avloc.models.base import AVLocModel, as_keras_model, split_inputs
from keras_avloc.models.losses_common import cross_entropy_with_integer_targets, l2_normalize

METHODS = {"avc": "AVC", "avsa": "AVSA"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["AVC", "AVSA", "avc_loss_terms", "avsa_contrast_terms"]

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # torch momentum 0.1
LN_EPSILON = 1e-5
VIDEO_BLOCKS = ("avsa", "r2plus1d")
AUDIO_INPUTS = {"ambix": 4, "ambix_intensity": 7}  # audio input -> channels (keras_avloc.data.audio)


# ------------------------------------------------------------------------------------------------- losses
def avc_loss_terms(video_emb, audio_emb, temperature=0.07):
    """AVC's cross-modal InfoNCE (official `ContrastiveLoss(target="cross-modal")`).

    Args:
        video_emb, audio_emb: projected embeddings [B, V, D] (normalised here); each viewpoint index j is a
            separate B-way problem (V = 1 for AVC).
        temperature: 0.07.

    Returns:
        dict: "loss" (mean of "video_to_audio" and "audio_to_video"), both cross-entropies, and "avc_accuracy"
        (the share of predictions whose positive beats every negative).
    """
    video = ops.transpose(l2_normalize(ops.cast(video_emb, "float32"), axis=-1), (1, 0, 2))  # [V, B, D]
    audio = ops.transpose(l2_normalize(ops.cast(audio_emb, "float32"), axis=-1), (1, 0, 2))
    scores = ops.einsum("vbd,vcd->vbc", video, audio) / temperature  # rows: videos, columns: audio
    views, batch = ops.shape(scores)[0], ops.shape(scores)[1]
    labels = ops.tile(ops.arange(batch, dtype="int32")[None], (views, 1))
    flat_labels = ops.reshape(labels, (-1,))
    video_to_audio = cross_entropy_with_integer_targets(ops.reshape(scores, (-1, batch)), flat_labels)
    audio_to_video = cross_entropy_with_integer_targets(
        ops.reshape(ops.transpose(scores, (0, 2, 1)), (-1, batch)), flat_labels)
    eye = ops.eye(batch, dtype="bool")[None]
    positive = ops.sum(ops.where(eye, scores, 0.0), axis=-1, keepdims=True)
    negatives = ops.where(eye, -1e9, scores)
    accuracy = ops.mean(ops.cast(ops.all(positive > negatives, axis=-1), "float32"))
    return {"loss": 0.5 * (video_to_audio + audio_to_video), "video_to_audio": video_to_audio,
            "audio_to_video": audio_to_video, "avc_accuracy": accuracy}


def avsa_contrast_terms(predictions, targets, temperature=0.07):
    """AVSA's viewpoint-level contrast of one direction (official `Video2AudioSeq.contrastive_joint_loss`).

    The prediction for viewpoint j of clip i is scored against the targets of clip i's own V viewpoints (label j;
    the other V - 1 are hard negatives) and viewpoint j of each other clip (B - 1 easy negatives).

    Args:
        predictions, targets: [B, V, D] (normalised here).
        temperature: 0.07.

    Returns:
        dict: "loss" (mean cross-entropy over the B x V predictions), "avc_accuracy" (the positive beats every
        easy negative) and "avsa_accuracy" (the positive is at least every hard negative).
    """
    pred = l2_normalize(ops.cast(predictions, "float32"), axis=-1)
    target = l2_normalize(ops.cast(targets, "float32"), axis=-1)
    hard = ops.einsum("bjd,bkd->bjk", pred, target) / temperature  # [B, V, V]
    easy = ops.einsum("bjd,cjd->bjc", pred, target) / temperature  # [B, V, B]
    batch, views = ops.shape(pred)[0], ops.shape(pred)[1]
    own_clip = ops.eye(batch, dtype="bool")[:, None, :]  # [B, 1, B]
    easy = ops.where(own_clip, -1e9, easy)  # the clip itself is not an easy negative
    logits = ops.concatenate([hard, easy], axis=-1)
    labels = ops.tile(ops.arange(views, dtype="int32")[None], (batch, 1))
    loss = cross_entropy_with_integer_targets(ops.reshape(logits, (batch * views, -1)), ops.reshape(labels, (-1,)))
    own = ops.eye(views, dtype="bool")[None]
    positive = ops.sum(ops.where(own, hard, 0.0), axis=-1, keepdims=True)
    avc_accuracy = ops.mean(ops.cast(ops.all(positive > easy, axis=-1), "float32"))
    avsa_accuracy = ops.mean(ops.cast(ops.all(positive >= hard, axis=-1), "float32"))
    return {"loss": loss, "avc_accuracy": avc_accuracy, "avsa_accuracy": avsa_accuracy}


# ------------------------------------------------------------------------------------------------- networks
def _bn(name, dtype):
    return FusedBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name, dtype=dtype)


def _conv3d(x, filters, kernel, stride, name, dtype):
    """torch Conv3d(padding=kernel // 2, bias=False): explicit symmetric zero padding, then a valid convolution."""
    pad = tuple(k // 2 for k in kernel)
    # "same" is torch's symmetric padding at stride 1 (odd kernels). At stride 2 "same" would pad only after
    # (torch pads both sides), and along time "same" hits a oneDNN bug (TF 2.21, CPUs with AVX512-BF16 but no
    # AMX): the bf16 filter gradient of a "same" Conv3D over 2 frames with a 3-frame kernel is garbage (up to
    # 1e36; tests/test_avsa.py), while explicit padding + "valid" is right. So: "same" only for spatial kernels.
    if all(s == 1 for s in stride) and pad[0] == 0:
        return keras.layers.Conv3D(filters, kernel, padding="same", use_bias=False, name=name, dtype=dtype)(x)
    if any(pad):
        x = keras.layers.ZeroPadding3D(tuple((p, p) for p in pad), name=name + "_pad", dtype=dtype)(x)
    return keras.layers.Conv3D(filters, kernel, strides=stride, use_bias=False, name=name, dtype=dtype)(x)


def _avsa_block(x, in_planes, planes, stride, name, dtype):
    """The official `BasicR2P1DBlock`: (1,3,3) -> BN ReLU -> (3,1,1) -> BN ReLU -> (1,3,3) -> BN ReLU -> (3,1,1),
    plus the input (a 1x1x1 strided convolution when the shape changes), then BN and ReLU."""
    relu = lambda n: keras.layers.ReLU(name=n, dtype=dtype)  # noqa: E731
    y = _conv3d(x, planes, (1, 3, 3), (1, stride, stride), name + "_spt_conv1", dtype)
    y = relu(name + "_spt_relu1")(_bn(name + "_spt_bn1", dtype)(y))
    y = _conv3d(y, planes, (3, 1, 1), (stride, 1, 1), name + "_tmp_conv1", dtype)
    y = relu(name + "_tmp_relu1")(_bn(name + "_tmp_bn1", dtype)(y))
    y = _conv3d(y, planes, (1, 3, 3), (1, 1, 1), name + "_spt_conv2", dtype)
    y = relu(name + "_spt_relu2")(_bn(name + "_spt_bn2", dtype)(y))
    y = _conv3d(y, planes, (3, 1, 1), (1, 1, 1), name + "_tmp_conv2", dtype)
    if in_planes != planes or stride != 1:
        x = _conv3d(x, planes, (1, 1, 1), (stride, stride, stride), name + "_res_conv", dtype)
    y = keras.layers.Add(name=name + "_add", dtype=dtype)([y, x])
    return relu(name + "_out_relu")(_bn(name + "_out_bn", dtype)(y))


def _factorised(x, mid, planes, stride, name, dtype):
    """Tran et al.'s (2+1)D convolution: (1,3,3) to `mid` channels, BN, ReLU, (3,1,1) to `planes`."""
    y = _conv3d(x, mid, (1, 3, 3), (1, stride, stride), name + "_spatial", dtype)
    y = keras.layers.ReLU(name=name + "_mid_relu", dtype=dtype)(_bn(name + "_mid_bn", dtype)(y))
    return _conv3d(y, planes, (3, 1, 1), (stride, 1, 1), name + "_temporal", dtype)


def _r2plus1d_block(x, in_planes, planes, stride, name, dtype):
    """torchvision's R(2+1)D BasicBlock: two (2+1)D convolutions of intermediate width
    floor(27 in planes / (9 in + 3 planes)), BN after each, a strided 1x1x1 convolution + BN on the shortcut."""
    mid = (in_planes * planes * 27) // (in_planes * 9 + 3 * planes)
    y = _factorised(x, mid, planes, stride, name + "_conv1", dtype)
    y = keras.layers.ReLU(name=name + "_relu1", dtype=dtype)(_bn(name + "_bn1", dtype)(y))
    y = _bn(name + "_bn2", dtype)(_factorised(y, mid, planes, 1, name + "_conv2", dtype))
    if in_planes != planes or stride != 1:
        x = _bn(name + "_down_bn", dtype)(_conv3d(x, planes, (1, 1, 1), (stride, stride, stride), name + "_down", dtype))
    return keras.layers.ReLU(name=name + "_out_relu", dtype=dtype)(keras.layers.Add(name=name + "_add", dtype=dtype)([y, x]))


def r2plus1d_backbone(width=64, block="avsa", input_channels=3, name="video_r2plus1d", dtype=None):
    """R(2+1)D-18 video encoder: [B, F, H, W, C] -> global max pool -> [B, 8 width] (512 at width 64).

    Args:
        width: channels of the first stage (64; 64, 128, 256, 512 through the stages).
        block: "avsa" (the official AVSA network, ~15 M parameters) or "r2plus1d" (Tran et al. / torchvision).
        input_channels: 3.
        name: model name.
        dtype: dtype policy.

    Returns:
        A functional `keras.Model` accepting any number of frames and any crop size.

    Example:
    >>> net = r2plus1d_backbone(width=8)
    >>> net(np.zeros((2, 8, 32, 32, 3), "float32")).shape
    TensorShape([2, 64])
    """
    if block not in VIDEO_BLOCKS:
        raise ValueError(f"video_block must be one of {', '.join(VIDEO_BLOCKS)}, got {block!r}.")
    width = int(width)
    inputs = keras.Input((None, None, None, int(input_channels)), name="video")
    if block == "avsa":
        x = _conv3d(inputs, width, (3, 7, 7), (1, 2, 2), "stem_conv", dtype)
        x = keras.layers.ReLU(name="stem_relu", dtype=dtype)(_bn("stem_bn", dtype)(x))
        make_block = _avsa_block
    else:
        stem_mid = max(1, (45 * width) // 64)
        x = _conv3d(inputs, stem_mid, (1, 7, 7), (1, 2, 2), "stem_spatial", dtype)
        x = keras.layers.ReLU(name="stem_mid_relu", dtype=dtype)(_bn("stem_mid_bn", dtype)(x))
        x = _conv3d(x, width, (3, 1, 1), (1, 1, 1), "stem_temporal", dtype)
        x = keras.layers.ReLU(name="stem_relu", dtype=dtype)(_bn("stem_bn", dtype)(x))
        make_block = _r2plus1d_block
    planes_in = width
    for stage, multiple in enumerate((1, 2, 4, 8)):
        planes = width * multiple
        for index in range(2):
            stride = 2 if stage > 0 and index == 0 else 1
            x = make_block(x, planes_in, planes, stride, f"conv{stage + 2}x_{index}", dtype)
            planes_in = planes
    outputs = keras.layers.GlobalMaxPooling3D(name="pool", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


def audio_conv2d(width=64, input_channels=4, name="audio_conv2d", dtype=None):
    """The official depth-10 audio CNN: [B, T, M, C] log-mels -> global max pool -> [B, 8 width].

    Example:
    >>> audio_conv2d(width=8)(np.zeros((2, 101, 128, 4), "float32")).shape
    TensorShape([2, 64])
    """
    width = int(width)
    inputs = keras.Input((None, None, int(input_channels)), name="audio")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad", dtype=dtype)(inputs)
    x = keras.layers.Conv2D(width, 7, strides=2, use_bias=False, name="conv1", dtype=dtype)(x)
    x = keras.layers.ReLU(name="conv1_relu", dtype=dtype)(_bn("conv1_bn", dtype)(x))
    for number, (multiple, stride) in enumerate(((1, 1), (2, 2), (4, 2), (8, 1)), start=1):
        for conv in (1, 2):
            prefix = f"block{number}_conv{conv}"
            x = keras.layers.ZeroPadding2D(1, name=prefix + "_pad", dtype=dtype)(x)
            x = keras.layers.Conv2D(width * multiple, 3, strides=stride if conv == 1 else 1, use_bias=False,
                                    name=prefix, dtype=dtype)(x)
            x = keras.layers.ReLU(name=prefix + "_relu", dtype=dtype)(_bn(prefix + "_bn", dtype)(x))
    outputs = keras.layers.GlobalMaxPooling2D(name="pool", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="keras_avloc")
class SimplifiedAttention(keras.layers.Layer):
    """The official single-head attention: softmax(q k^T / sqrt(D)) v, then a linear layer ([B, V, D] -> same)."""

    def __init__(self, model_dim, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = int(model_dim)
        dense = lambda n: keras.layers.Dense(self.model_dim, name=n, dtype=self.dtype_policy)  # noqa: E731
        self.query, self.key, self.value, self.dense = dense("query"), dense("key"), dense("value"), dense("dense")

    def build(self, input_shape):
        for layer in (self.query, self.key, self.value, self.dense):
            layer.build(input_shape)
        self.built = True

    def call(self, hidden):
        scores = ops.einsum("bid,bjd->bij", self.query(hidden), self.key(hidden)) / math.sqrt(self.model_dim)
        probabilities = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        context = ops.einsum("bij,bjd->bid", ops.cast(probabilities, self.compute_dtype), self.value(hidden))
        return self.dense(context)

    def get_config(self):
        return {**super().get_config(), "model_dim": self.model_dim}


def translation_transformer(model_dim=512, depth=2, expansion=4, dropout=0.1, name="transformer", dtype=None):
    """The official `SimpleTransformer(multihead=False)` over a sequence of viewpoints [B, V, D] -> [B, V, D]:
    each layer is attention -> dropout -> LayerNorm(+ input) -> D*expansion ReLU D -> dropout -> LayerNorm(+) -> ReLU.
    No positional input: the viewpoints are a set."""
    inputs = keras.Input((None, int(model_dim)), name="viewpoints")
    x = inputs
    for layer in range(int(depth)):
        prefix = f"layer{layer}"
        attended = SimplifiedAttention(model_dim, name=prefix + "_attention", dtype=dtype)(x)
        attended = keras.layers.Dropout(dropout, name=prefix + "_attention_dropout", dtype=dtype)(attended)
        x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=prefix + "_attention_norm", dtype=dtype)(
            keras.layers.Add(name=prefix + "_attention_add", dtype=dtype)([attended, x]))
        dense = keras.layers.Dense(int(model_dim) * int(expansion), activation="relu", name=prefix + "_dense1",
                                   dtype=dtype)(x)
        dense = keras.layers.Dense(int(model_dim), name=prefix + "_dense2", dtype=dtype)(dense)
        dense = keras.layers.Dropout(dropout, name=prefix + "_dense_dropout", dtype=dtype)(dense)
        x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=prefix + "_dense_norm", dtype=dtype)(
            keras.layers.Add(name=prefix + "_dense_add", dtype=dtype)([dense, x]))
        x = keras.layers.ReLU(name=prefix + "_out_relu", dtype=dtype)(x)
    return keras.Model(inputs, x, name=name)


# ------------------------------------------------------------------------------------------------- models
class SphereModel(AVLocModel):
    """Shared base of AVC and AVSA: encoders of viewpoint videos and their rotated ambisonics.

    Inputs are {"image": video [B, V, F, S, S, 3] (ImageNet-normalised crops), "audio": [B, V, T, 128, 4]
    (`keras_avloc.data.audio.avsa_logmel`, dB)} as `keras_avloc.data.sphere_dataset.make_sphere_dataset` builds
    them; `call` returns the backbone features {"video_feat", "audio_feat"} [B, V, 8 width].

    Args:
        width: first-stage channels of both encoders (64: 512-d features).
        video_block: "avsa" (official) or "r2plus1d" (see the module docstring).
        frames: frames per viewpoint clip (8 = 0.5 s at 16 fps).
        crop_size: crop side the model is trained at (112).
        embed_dim: head size (128).
        temperature: 0.07.
        mel_stats: {"mean": [128], "std": [128]} per-mel statistics of the training log-mels (None: 0 and 1);
            `avloc train` computes them from the training split.
        weight_decay: coupled L2 weight decay (1e-5).
        crop_method: where `avloc train` points the training viewpoints: "random" (official default), "ambi_pow"
            (drawn from the clip's ambisonic power map) or "objects" (centred on the clip's objects, as the paper's
            pipeline centres them on detections; `keras_avloc.data.viewpoints`).
        audio_input: "ambix" (official: log-mels of W, Y, Z, X, 4 channels) or "ambix_intensity" (beyond the paper:
            those and the three mel-band intensity channels of `keras_avloc.data.audio.avsa_intensity`, which keep
            the sign that tells front from back; 7 channels, the last three not normalised).
        video_encoder, audio_encoder: optional Keras models to use instead of the official ones.
        **kwargs: `eval_settings` and `keras.Model` arguments (`dtype`, `name`).
    """

    frontend = "avsa"
    data_kind = "sphere"
    DEMO_SETTINGS = {"crop_method": "objects", "audio_input": "ambix_intensity"}
    """The 360° demo's options (`keras_avloc.demo.sphere`), chosen on val (docs/methods/avsa.md): viewpoints on the
    objects and the intensity channels; lr 1e-3 in each class's `demo_recipe`."""
    draws_heatmaps = False
    default_clip_seconds = 1.0
    default_image_size = 112
    default_learning_rate = 1e-4
    viewpoints_per_clip = 4
    inherited_kwargs = ("width", "video_block", "frames", "mel_stats", "audio_input")

    def __init__(self, width=64, video_block="avsa", frames=8, crop_size=112, embed_dim=128, temperature=0.07,
                 mel_stats=None, weight_decay=1e-5, crop_method="random", audio_input="ambix", video_encoder=None,
                 audio_encoder=None, **kwargs):
        super().__init__(**kwargs)
        self.crop_method = str(crop_method)  # checked by make_sphere_dataset when training starts
        if audio_input not in AUDIO_INPUTS:
            raise ValueError(f"audio_input must be one of {', '.join(AUDIO_INPUTS)}, got {audio_input!r}.")
        self.audio_input = audio_input
        self.width = int(width)
        self.video_block = video_block
        self.frames = int(frames)
        self.crop_size = int(crop_size)
        self.embed_dim = int(embed_dim)
        self.temperature = float(temperature)
        self.weight_decay = float(weight_decay)
        stats = mel_stats or {"mean": [0.0] * 128, "std": [1.0] * 128}
        self.mel_stats = {"mean": [float(v) for v in stats["mean"]], "std": [float(v) for v in stats["std"]]}
        if len(self.mel_stats["mean"]) != len(self.mel_stats["std"]):
            raise ValueError("mel_stats: 'mean' and 'std' must have one value per mel band.")
        dtype = self.dtype_policy
        self.video_encoder = (as_keras_model(video_encoder, f"{type(self).__name__} video_encoder") if video_encoder
                              else r2plus1d_backbone(self.width, video_block, dtype=dtype))
        self.audio_encoder = (as_keras_model(audio_encoder, f"{type(self).__name__} audio_encoder") if audio_encoder
                              else audio_conv2d(self.width, AUDIO_INPUTS[audio_input], dtype=dtype))
        self._custom_encoders = bool(video_encoder or audio_encoder)
        self.image_backbone = self.image_encoder = self.video_encoder
        self.feature_dim = int(self.video_encoder.output_shape[-1])

    def _head(self, name):
        return keras.layers.Dense(self.embed_dim, name=name, dtype=self.dtype_policy)

    def normalize_audio(self, logmels):
        """(log-mel - mean) / (std + 1e-5) per mel band (the official normalisation) of [..., 128, T]."""
        mean = ops.convert_to_tensor(np.asarray(self.mel_stats["mean"], np.float32))
        std = ops.convert_to_tensor(np.asarray(self.mel_stats["std"], np.float32))
        return (ops.cast(logmels, "float32") - mean[:, None]) / (std[:, None] + 1e-5)

    def call(self, inputs, training=False):
        """Backbone features of every viewpoint: {"video_feat": [B, V, C], "audio_feat": [B, V, C]}."""
        video, audio = split_inputs(inputs)
        video, audio = ops.convert_to_tensor(video), ops.convert_to_tensor(audio)
        batch, views = ops.shape(video)[0], ops.shape(video)[1]
        flat_video = ops.reshape(video, (-1,) + tuple(video.shape[2:]))
        flat_audio = ops.reshape(audio, (-1,) + tuple(audio.shape[2:]))
        # log-mels are [.., T, 128, C]: the statistics are per mel band, shared by the four log-mel channels (the
        # intensity channels of "ambix_intensity" are ratios in [-1, 1] and pass as they are)
        logmels = ops.transpose(self.normalize_audio(ops.transpose(flat_audio[..., :4], (0, 3, 2, 1))), (0, 3, 2, 1))
        flat_audio = (ops.concatenate([logmels, ops.cast(flat_audio[..., 4:], "float32")], axis=-1)
                      if AUDIO_INPUTS[self.audio_input] > 4 else logmels)
        video_feat = self.video_encoder(flat_video, training=training)
        audio_feat = self.audio_encoder(flat_audio, training=training)
        return {"video_feat": ops.reshape(video_feat, (batch, views, -1)),
                "audio_feat": ops.reshape(audio_feat, (batch, views, -1))}

    def compute_batch_terms(self, x, y, training):
        features = self.global_batch(self(x, training=training))
        return self.contrast_terms(features["video_feat"], features["audio_feat"], training)

    def localize(self, images, audio, image_size=None):
        raise NotImplementedError(
            f"{type(self).__name__} scores viewpoints of a 360° clip, not pixels of a frame: use "
            "keras_avloc.evaluation.sphere.sweep_map (or `avloc localize` on a 360° clip).")

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.viewpoint_scores(x)

    def load_image_weights(self, path):
        """Inflates a 2D ResNet-18 `.weights.h5` of the model's width (the stand-in) into the video network
        (`keras_avloc.models.avsa_inflate`); `avloc train --init-image-weights` calls it."""
        from keras_avloc.backbones import ResNet18
        from keras_avloc.models.avsa_inflate import inflate_resnet18

        image_backbone = ResNet18(width=self.width, input_shape=(None, None, 3))
        image_backbone.load_weights(path)
        inflate_resnet18(self.video_encoder, image_backbone)

    @classmethod
    def from_official_checkpoint(cls, path, **kwargs):
        """A model with an official checkpoint's weights (`checkpoint.pth.tar` of pedro-morgado/AVSpatialAlignment:
        the encoders from "model", the heads and AVSA's transformers from "train_criterion") and the official per-mel
        statistics when their `*norm-stats*.npz` sits beside the file (`keras_avloc.models.avsa_checkpoint`).

        Args:
            path: the `.pth.tar` (needs torch) or an `.npz` of its merged state dicts.
            **kwargs: other constructor arguments; `mel_stats` overrides the file beside the checkpoint.

        Returns:
            (model, report): report {"video", "audio", "criterion", "mel_stats"} with "loaded" and "ignored".
        """
        from keras_avloc.models.avsa_checkpoint import official_sphere_model

        return official_sphere_model(cls, path, **kwargs)

    def load_official_checkpoint(self, path, state=None):
        """Loads an official checkpoint into this model (see `from_official_checkpoint`).

        Args:
            path: the `.pth.tar` or `.npz` (named in messages).
            state: its content when already read.

        Returns:
            dict {"video", "audio", "criterion"} of reports with "loaded" and "ignored".
        """
        from keras_avloc.models.avsa_checkpoint import load_official

        return load_official(self, path, state)

    def initialize_from(self, other):
        """Starts from another sphere model (AVSA from AVC, the official curriculum): both encoders' weights."""
        if not isinstance(other, SphereModel):
            raise ValueError(f"expected a trained AVC / AVSA model, got {type(other).__name__}.")
        if getattr(other, "audio_input", "ambix") != self.audio_input:
            raise ValueError(f"it hears audio_input {other.audio_input!r}, this model {self.audio_input!r}; train this "
                             "model with the same audio_input.")
        for mine, theirs, what in ((self.video_encoder, other.video_encoder, "video"),
                                   (self.audio_encoder, other.audio_encoder, "audio")):
            if [tuple(w.shape) for w in mine.weights] != [tuple(w.shape) for w in theirs.weights]:
                raise ValueError(f"its {what} encoder has other sizes (width {other.width}, video_block "
                                 f"{other.video_block!r}); train this model with the same settings.")
            mine.set_weights(theirs.get_weights())

    def get_config(self):
        config = super().get_config()
        config.update({"width": self.width, "video_block": self.video_block, "frames": self.frames,
                       "crop_size": self.crop_size, "embed_dim": self.embed_dim, "temperature": self.temperature,
                       "mel_stats": self.mel_stats, "weight_decay": self.weight_decay, "crop_method": self.crop_method,
                       "audio_input": self.audio_input})
        if self._custom_encoders:
            config["video_encoder"] = keras.saving.serialize_keras_object(self.video_encoder)
            config["audio_encoder"] = keras.saving.serialize_keras_object(self.audio_encoder)
        return config


@keras.saving.register_keras_serializable(package="keras_avloc")
class AVC(SphereModel):
    """AVC: audio-visual correspondence on one viewpoint per clip (the first stage of the AVSA curriculum).

    Example:
    >>> model = AVC(width=8)
    >>> model.compile()  # Adam(1e-4), coupled weight decay 1e-5
    >>> model.fit(make_sphere_dataset("datasets/sphere", "train", viewpoints=1), epochs=5)  # doctest: +SKIP
    """

    tiny_config = {"width": 4, "crop_size": 32, "frames": 4}
    demo_recipe = {"training": {"learning_rate": 1e-3, "epochs": 30}, "settings": SphereModel.DEMO_SETTINGS,
                   "tiny_settings": {**SphereModel.DEMO_SETTINGS, "frames": 4}}
    loss_term_names = ("loss", "video_to_audio", "audio_to_video", "avc_accuracy")
    display_name = "AVC"
    viewpoints_per_clip = 1

    def __init__(self, name="avc", **kwargs):
        super().__init__(name=name, **kwargs)
        self.video_head = self._head("video_head")
        self.audio_head = self._head("audio_head")
        for head in (self.video_head, self.audio_head):
            head.build((None, self.feature_dim))

    def contrast_terms(self, video_feat, audio_feat, training=False):
        return avc_loss_terms(self.video_head(video_feat), self.audio_head(audio_feat), self.temperature)

    def viewpoint_scores(self, x):
        """Cosine similarity [B, V] of each viewpoint's video and audio embeddings."""
        features = self(x, training=False)
        video = l2_normalize(ops.cast(self.video_head(features["video_feat"]), "float32"), axis=-1)
        audio = l2_normalize(ops.cast(self.audio_head(features["audio_feat"]), "float32"), axis=-1)
        return ops.sum(video * audio, axis=-1)


@keras.saving.register_keras_serializable(package="keras_avloc")
class AVSA(SphereModel):
    """AVSA: audio-visual spatial alignment over four viewpoints per clip (see the module docstring).

    Args:
        depth, expansion, dropout: the translation transformers' (2, 4, 0.1).
        **kwargs: see `SphereModel`.

    Example:
    >>> model = AVSA(width=8)
    >>> model.compile()
    >>> model.fit(make_sphere_dataset("datasets/sphere", "train", viewpoints=4), epochs=5)  # doctest: +SKIP
    """

    tiny_config = {"width": 4, "crop_size": 32, "frames": 4}
    demo_recipe = {"training": {"learning_rate": 1e-3, "epochs": 20}, "settings": SphereModel.DEMO_SETTINGS,
                   "tiny_settings": {**SphereModel.DEMO_SETTINGS, "frames": 4}}
    loss_term_names = ("loss", "audio_to_video", "video_to_audio", "avc_accuracy", "avsa_accuracy")
    display_name = "AVSA"
    viewpoints_per_clip = 4
    init_from_method = "avc"

    def __init__(self, depth=2, expansion=4, dropout=0.1, name="avsa", **kwargs):
        super().__init__(name=name, **kwargs)
        self.depth, self.expansion, self.dropout = int(depth), int(expansion), float(dropout)
        dtype = self.dtype_policy
        self.v2a_transformer = translation_transformer(self.feature_dim, self.depth, self.expansion, self.dropout,
                                                       name="v2a_transformer", dtype=dtype)
        self.a2v_transformer = translation_transformer(self.feature_dim, self.depth, self.expansion, self.dropout,
                                                       name="a2v_transformer", dtype=dtype)
        self.video_head = self._head("video_head")
        self.audio_head = self._head("audio_head")
        self.video_pred_head = self._head("video_pred_head")
        self.audio_pred_head = self._head("audio_pred_head")
        for head in (self.video_head, self.audio_head, self.video_pred_head, self.audio_pred_head):
            head.build((None, None, self.feature_dim))

    def embeddings(self, video_feat, audio_feat, training=False):
        """(video, audio, predicted video, predicted audio) 128-d embeddings [B, V, 128]."""
        audio_pred = self.v2a_transformer(video_feat, training=training)
        video_pred = self.a2v_transformer(audio_feat, training=training)
        return (self.video_head(video_feat), self.audio_head(audio_feat), self.video_pred_head(video_pred),
                self.audio_pred_head(audio_pred))

    def contrast_terms(self, video_feat, audio_feat, training=False):
        video, audio, video_pred, audio_pred = self.embeddings(video_feat, audio_feat, training)
        a2v = avsa_contrast_terms(video_pred, video, self.temperature)
        v2a = avsa_contrast_terms(audio_pred, audio, self.temperature)
        return {"loss": 0.5 * (a2v["loss"] + v2a["loss"]), "audio_to_video": a2v["loss"],
                "video_to_audio": v2a["loss"], "avc_accuracy": 0.5 * (a2v["avc_accuracy"] + v2a["avc_accuracy"]),
                "avsa_accuracy": 0.5 * (a2v["avsa_accuracy"] + v2a["avsa_accuracy"])}

    def viewpoint_scores(self, x):
        """[B, V]: the mean of cos(predicted video from audio, video) and cos(predicted audio from video, audio),
        the viewpoints of a clip forming one sequence (as in training)."""
        features = self(x, training=False)
        video, audio, video_pred, audio_pred = self.embeddings(features["video_feat"], features["audio_feat"])

        def cosine(a, b):
            return ops.sum(l2_normalize(ops.cast(a, "float32"), axis=-1) * l2_normalize(ops.cast(b, "float32"),
                                                                                         axis=-1), axis=-1)

        return 0.5 * (cosine(video_pred, video) + cosine(audio_pred, audio))

    def get_config(self):
        config = super().get_config()
        config.update({"depth": self.depth, "expansion": self.expansion, "dropout": self.dropout})
        return config
