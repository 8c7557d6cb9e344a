"""DenseAV: dense multi-head audio-visual similarity (Hamilton et al., CVPR 2024).

Constants follow the official code, mhamilton723/DenseAV: the objective and the regularisers from
`denseav/train.py` (`LitAVAligner.loss`, `contrast_loss`, `SimilarityCalibrator`), the aggregation from
`denseav/aggregators.py` ("misa", `ImageThenAudioAggregator("max", "avg")` with `head_agg="max_elementwise"`),
the aligners from `denseav/aligners.py` ("image_linear", "audio_sa_3_3_pool_2"), the weights and schedule
from `denseav/configs/av_align.yaml`, the spliced negative audio from `denseav/shared.py` (`prep_waveform`,
`_splice_clips`) and the quad mixup from `denseav/data/AVDatasets.py`.

The model, in tensors (channels last):
* image features V [B, h, w, D] = 1x1 conv(LayerNorm_eps1e-4(featurizer(image))), D = 384; in training
  2 x 2 average pooled (`image_pool_width=2`).
* audio features A [B, t, D]: featurizer(log-mel) [B, T', F', C] -> mean over frequency -> LayerNorm ->
  conv (1, 3) stride 3 (C -> D) -> conv (1, 3) stride 3 (D -> D) -> one pre-norm self-attention block
  (6 heads, MLP ratio 4, GELU, LayerNorm eps 1e-4) over the time steps and a learned CLS token.
* the similarity volume s[a, v, k, h, w, t] = sum_c A[a, t, k, c] V[v, h, w, k, c] over the K heads'
  channel groups (D / K each), in float32 whatever the compute dtype (`similarity_volume`).
* "misa" aggregation: elementwise max over heads, max over image space, (mean over frequency: the aligner
  already averaged it), mean over the audio time steps that are not silent (`misa_aggregate`).
* calibration: S = w * agg - mean(w * agg), w = clip(exp(theta), 0.01, 100), theta initialised to
  log(1.0) (`calibrate`); loss = 1/2 (CE over rows + CE over columns) with the diagonal as targets.
* `norm_vectors` (the official option of that name, off in `av_align.yaml`; `LitAVAligner.prep_feats`): V and
  A become unit vectors over their D channels, after the training pooling, so every similarity is a cosine.
* regularisers on the matched-pair sims P[b, k, h, w, t] (the volume's diagonal, times the silence mask),
  with the official weights: head specialisation mean |P_i| |P_j| over head pairs (0.05, K > 1 only),
  non-negativity mean(min(s, 0)^2) (0.01), silence mean |s| over silent frames (0.01), temporal total
  variation mean (P[t+1] - P[t])^2 (0.01), calibration balance (log 1.0 - log w)_+^2 (0.1), negative audio
  sum P^2 over the spliced-in frames / their count (0.01), mixup sum P^2 outside the clip's own quadrant /
  its size (0.1). Each is its own tracked term (`denseav_loss_terms`).
* training schedule: `pretrain_steps` (3000) steps that train the aligners only (the featurizers' gradients
  are zeroed) at `pretrain_learning_rate` (5e-5), then everything at the learning rate (5e-5) after a
  `warmup_steps` (1000) linear warm-up; Adam eps 1e-7; every variable's gradient clipped to norm 10
  (torch's per-parameter `clip_grad_norm_`, Keras' `clipnorm`).
* data augmentation, in graph on each training batch: a negative clip (the next clip of the batch) spliced
  into every clip with raised-cosine fades, which marks those frames negative (`neg_audio: true`); half of
  the clips keep only a random window (at least 0.5 s) and the rest is silence, masked out
  (`extra_audio_masking: true`); 10% of the images become a 2 x 2 grid of half-size frames of which one is
  the clip's own (`quad_mixup: 0.1`).

Featurizers are pluggable Keras models: `image_featurizer` [B, H, W, 3] -> [B, h, w, C] and
`audio_featurizer` [B, T, F, 1] -> [B, T', F', C'] (time on axis 1, as the "csol" log-mel front-end).
The defaults train here: a ResNet-18 image map at stride 16 (layer4 stride 1; the ImageNet stand-in loads
into it) and `spectrogram_cnn`, which keeps a 20 ms time step (4x down from the 5 ms log-mel frames, the
rate of the official HuBERT features) while reducing frequency 16x. The paper's DINO ViT-S/8 + HuBERT pair
plugs in through the same arguments when a user has them locally.

Choices and deviations (each a parameter where it matters):
* Heads: `num_heads=2` (the released sound + speech model and the paper's story); the official default
  config uses 1.
* The learned audio CLS token lives in the aligned space (D) instead of going through the aligner's
  LayerNorm and linear layer from the featurizer's space: the same function class, fewer parameters.
* The splice and the silence window act on log-mel frames (the official code edits the waveform): the
  negative clip fills 25-50% of the clip (`negative_fraction`) with raised-cosine fades of half its length
  at most; silence is the clip's lowest log-mel value.
* The non-negativity term averages over the whole similarity volume and the silence term over every silent
  frame, where the official code draws 250 random entries (the expectation of its estimate), and the
  silence term is not skipped when a batch has fewer than 250 silent frames.
* LoRA (`image_lora_rank`, official rank 8 and alpha 32 for the ViT featurizer) is off by default: the default
  ResNet-18 has no attention projections. With a transformer featurizer, Keras' own `enable_lora` is applied to
  the query, key, value and output projections of its every `MultiHeadAttention` layer, which freezes their
  kernels (`enable_image_lora`).
* The silence mask is read from the log-mel: a frame whose every bin sits at the clip's floor is digital
  silence (the official AUDIO_MASK marks the zero-padded samples, which give exactly such frames).
* The aligners' layers keep torch's default initialisation (U(+-1/sqrt(fan_in)), `torch_default_init`), not
  Keras' Glorot: the scale of the similarities at the start follows from it. With Glorot the first-epoch
  NCE on the stamps demo build sat far above chance (6.1 against log 32 = 3.5) and the model did not recover
  in 8 epochs (val AUC 0.18 against 0.27).

Official bugs not reproduced: `forward_image` runs the image featurizer *and the image aligner* under
`torch.no_grad()`, so the image aligner never receives a gradient (here it learns); the phase-2 optimizer
and its warm-up are re-created at global step 3000, whose `LambdaLR(..., last_epoch=global_step - 1)`
starts past the warm-up (here the warm-up runs at the start of phase 2, as the paper describes).
"""

import math

import keras
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.models.base import AVLocModel, as_keras_model, images_and_audio, split_inputs, upsample_maps
from keras_avloc.models.denseav_networks import (  # noqa: F401 - re-exported: the networks live there
    ATTENTION_HEADS, CODE_DIM, LORA_ALPHA, LORA_RANK, MLP_RATIO, NORM_EPSILON, ClassToken, FrequencyMean, audio_aligner,
    enable_image_lora, image_aligner, spectrogram_cnn, torch_default_init,
)
from keras_avloc.models.denseav_losses import (  # noqa: F401 - re-exported: the losses live there
    CAL_INIT, CAL_MAX, CAL_MIN, NUM_HEADS, REGULARIZER_WEIGHTS, _heads, calibrate, calibration_weight,
    denseav_loss_terms, masked_time_mean, misa_aggregate, paired_similarity, similarity_volume, specialization_loss,
    symmetric_nce,
)
from keras_avloc.models.losses_common import l2_normalize

METHODS = {"denseav": "DenseAV"}
"""The methods this module registers (read by `keras_avloc.models.registry` from the source)."""
__all__ = ["DenseAV", "denseav_loss_terms"]

PRETRAIN_STEPS = 3000
PRETRAIN_LEARNING_RATE = 5e-5
LEARNING_RATE = 5e-5
WARMUP_STEPS = 1000
GRADIENT_CLIP = 10.0
ADAM_EPSILON = 1e-7
IMAGE_POOL_WIDTH = 2
QUAD_MIXUP = 0.1
MASK_LEVEL = 0.01
MIN_WINDOW_SECONDS = 0.5
FRAMES_PER_SECOND = 200.0  # the "csol" log-mel front-end: 16 kHz, hop 80


# ---------------------------------------------------------------------------------------------------
# In-graph training augmentation (the official data code's negative splice, silence window and quad mixup).


def raised_cosine_weights(length, start, span, easing):
    """The weight of a clip's own audio at each of `length` frames when `span` frames of another clip are
    spliced in at `start` with raised-cosine fades of `easing` frames (`_splice_clips`): 1 outside, fading
    to 0 over the first `easing` frames, 0, back to 1 over the last `easing` frames. All [B] int tensors.

    Returns:
        float32 [B, length].
    """
    frames = ops.cast(ops.arange(length), "float32")[None, :]
    start, span, easing = (ops.cast(value, "float32")[:, None] for value in (start, span, easing))
    relative = frames - start
    denominator = ops.maximum(easing - 1.0, 1.0)
    fade_in = 0.5 * (1.0 + ops.cos(math.pi * relative / denominator))
    fade_out = 1.0 - 0.5 * (1.0 + ops.cos(math.pi * (relative - (span - easing)) / denominator))
    inside = ops.where(relative < easing, fade_in, ops.where(relative >= span - easing, fade_out, 0.0))
    return ops.where((relative < 0) | (relative >= span), 1.0, inside)


def silence_mask(audio, level=1e-3):
    """Frames that are not digital silence [B, T]: a frame is silent when every frequency bin sits at the clip's
    floor (the log-mel of zeros; the official AUDIO_MASK marks the padded samples). A clip with no sounding
    frame keeps them all (the official code switches one random frame on)."""
    audio = ops.cast(audio, "float32")
    floor = ops.min(audio, axis=(1, 2, 3), keepdims=True)
    sounding = ops.cast(ops.max(audio - floor, axis=(2, 3)) > level, "float32")
    return ops.where(ops.sum(sounding, axis=1, keepdims=True) > 0, sounding, 1.0)


def resize_time_mask(mask, steps, discrete):
    """Frame mask [B, T] -> [B, steps] by linear interpolation with half-pixel centres (torch's bilinear
    `interpolate`, as `interpolate_mask`); `discrete` keeps > 0.01 as on."""
    resized = ops.image.resize(ops.cast(mask, "float32")[:, None, :, None], (1, int(steps)), interpolation="bilinear",
                               antialias=False)[:, 0, :, 0]
    return ops.cast(resized > MASK_LEVEL, "float32") if discrete else resized


def quad_grid(images, position):
    """2 x 2 grids of half-size frames: the clip's own at quadrant `position` [B] (0 top left, 1 top right,
    2 bottom left, 3 bottom right), the next three clips of the batch elsewhere.

    Returns:
        (grids [B, H, W, 3] (H, W even), own-quadrant mask [B, H, W]).
    """
    height, width = images.shape[1], images.shape[2]
    half = ops.image.resize(images, (height // 2, width // 2), interpolation="bilinear", antialias=False)
    sources = ops.stack([ops.roll(half, -shift, axis=0) for shift in range(4)])  # [4, B, h, w, 3]
    quadrants = []
    for quadrant in range(4):
        choice = ops.mod(quadrant - ops.cast(position, "int32") + 4, 4)
        quadrants.append(ops.take_along_axis(
            ops.transpose(sources, (1, 0, 2, 3, 4)), ops.reshape(choice, (-1, 1, 1, 1, 1)), axis=1)[:, 0])
    grids = ops.concatenate([ops.concatenate(quadrants[:2], axis=2), ops.concatenate(quadrants[2:], axis=2)], axis=1)
    rows = ops.arange(2 * (height // 2))[:, None] >= height // 2
    cols = ops.arange(2 * (width // 2))[None, :] >= width // 2
    quadrant_of_pixel = ops.cast(rows, "int32") * 2 + ops.cast(cols, "int32")
    own = ops.cast(quadrant_of_pixel[None] == ops.cast(position, "int32")[:, None, None], "float32")
    return grids, own


@keras.saving.register_keras_serializable(package="keras_avloc")
class DenseAVSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`pretrain_learning_rate` for the first `pretrain_steps` steps, then a linear warm-up over `warmup_steps`
    to `learning_rate` (the two official phases in one schedule)."""

    def __init__(self, learning_rate=LEARNING_RATE, pretrain_steps=PRETRAIN_STEPS,
                 pretrain_learning_rate=PRETRAIN_LEARNING_RATE, warmup_steps=WARMUP_STEPS):
        self.learning_rate = float(learning_rate)
        self.pretrain_steps = int(pretrain_steps)
        self.pretrain_learning_rate = float(pretrain_learning_rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        phase_two = step - float(self.pretrain_steps)
        ramp = ops.minimum((phase_two + 1.0) / float(max(self.warmup_steps, 1)), 1.0) if self.warmup_steps else 1.0
        return ops.where(phase_two < 0, self.pretrain_learning_rate, self.learning_rate * ramp)

    @property
    def full_rate_step(self):
        """Steps up to and including the first at the full learning rate; a shorter run never reaches it."""
        return self.pretrain_steps + self.warmup_steps

    def get_config(self):
        return {"learning_rate": self.learning_rate, "pretrain_steps": self.pretrain_steps,
                "pretrain_learning_rate": self.pretrain_learning_rate, "warmup_steps": self.warmup_steps}


@keras.saving.register_keras_serializable(package="keras_avloc")
class DenseAV(AVLocModel):
    """DenseAV: multi-head dense audio-visual similarity (see the module docstring).

    Args:
        code_dim: aligned feature size D (384).
        num_heads: similarity heads K (2; D must split into K groups).
        backbone_kwargs: keyword arguments of the default featurizers (e.g. `{"width": 16}`; the image
            ResNet-18 takes `padding` too).
        image_layer4_stride: the default image ResNet-18's layer4 stride (1: stride 16 maps).
        image_featurizer, audio_featurizer: Keras models replacing the defaults (see the module docstring).
        cal_init: initial calibration weight (1.0).
        regularizer_weights: overrides of `REGULARIZER_WEIGHTS` ({"mixup": 0.0, ...}).
        image_pool_width: average pooling of the image features in training (2).
        quad_mixup: share of training images that become 2 x 2 grids (0.1).
        negative_audio: splice another clip into every training clip (True).
        negative_fraction: (low, high) share of the clip the negative fills.
        extra_audio_masking: half of the training clips keep only a random window (True).
        pretrain_steps, pretrain_learning_rate, warmup_steps: the two-phase schedule (3000, 5e-5, 1000).
        attention_heads: heads of the audio aligner's self-attention (6).
        image_lora_rank: LoRA rank on the image featurizer's attention projections (0 = off, the default for
            the ResNet-18; the official ViT setting is 8, with `lora_alpha` 32).
        norm_vectors: the official `norm_vectors` (off in `av_align.yaml`): aligned image and audio features
            become unit vectors over their channels (after the training pooling), so every similarity is a
            cosine and the calibration weight alone sets the NCE's temperature (`cal_init` then sets its start).
        seed: seed of the in-graph augmentation.
        name: model name; **kwargs: `eval_settings` and `keras.Model` arguments (`dtype`).

    Example:
    >>> model = DenseAV(backbone_kwargs={"width": 16}, pretrain_steps=0)
    >>> model.compile()  # Adam with the two-phase schedule, eps 1e-7, clipnorm 10
    >>> model.fit(train_ds, epochs=8)  # doctest: +SKIP
    >>> heads = model.localize_heads(images, spectrograms)  # [B, K, H, W]  # doctest: +SKIP
    """

    # Tests: the in-graph augmentations draw random numbers and mix clips within a replica's batch, so off.
    tiny_config = {"backbone_kwargs": {"width": 8}, "pretrain_steps": 0, "negative_audio": False,
                   "extra_audio_masking": False, "quad_mixup": 0.0}

    frontend = "csol"
    default_clip_seconds = 2.0
    default_split = "train+train_speech"  # sound and speech pairs: what lets the heads specialise
    default_learning_rate = LEARNING_RATE
    display_name = "DenseAV"
    # In the demo (`--methods denseav` or `all`) DenseAV trains on sound and speech pairs with the demo's audio
    # augmentation, its masks scaled to DenseAV's log-mel ("logmel_masks"), and 2 s clips, its default: a spoken
    # description lasts up to 2 s. The audio featurizer starts from the speech stand-in (`avloc pretrain-audio`, the
    # paper's HuBERT cannot be downloaded), without the official phase of frozen featurizers (200 such steps lowered
    # the val speech mAP; their val_unseen gain was within run-to-run spread, and none in the demo), and a 50-step
    # warm-up (the official 1,000 steps are more than the demo's 600 steps of training). Cosine
    # similarities (the official option `norm_vectors`) with the calibration starting at 14.3 (about 1 / 0.07, the
    # temperature of LVS and EZ-VSL): with the official dot products the map stayed below the targets on val
    # (docs/methods/denseav.md).
    demo_recipe = {"order": 6, "training": {"augment": "logmel_masks", "clip_seconds": 2.0}, "speech_standin": True,
                   "prompted": True,
                   "settings": {"pretrain_steps": 0, "warmup_steps": 50, "norm_vectors": True, "cal_init": 14.3},
                   "tiny_settings": {"pretrain_steps": 0, "warmup_steps": 50, "norm_vectors": True, "cal_init": 14.3,
                                     "code_dim": 12}}
    upsample_align_corners = False  # torch `interpolate(..., mode="bilinear")`: half-pixel centres
    loss_term_names = ("loss", "nce", "nonneg", "silence", "negative_audio", "tv", "cal_balance", "specialization",
                       "mixup", "temperature")
    optimizer_options = {"epsilon": ADAM_EPSILON, "clipnorm": GRADIENT_CLIP}

    def __init__(self, code_dim=CODE_DIM, num_heads=NUM_HEADS, backbone_kwargs=None, image_layer4_stride=1,
                 image_featurizer=None, audio_featurizer=None, cal_init=CAL_INIT, regularizer_weights=None,
                 image_pool_width=IMAGE_POOL_WIDTH, quad_mixup=QUAD_MIXUP, negative_audio=True,
                 negative_fraction=(0.25, 0.5), extra_audio_masking=True, pretrain_steps=PRETRAIN_STEPS,
                 pretrain_learning_rate=PRETRAIN_LEARNING_RATE, warmup_steps=WARMUP_STEPS,
                 attention_heads=ATTENTION_HEADS, image_lora_rank=0, lora_alpha=LORA_ALPHA, norm_vectors=False, seed=0,
                 name="denseav", **kwargs):
        super().__init__(name=name, **kwargs)
        if int(num_heads) < 1 or int(code_dim) % int(num_heads):
            raise ValueError(f"DenseAV: code_dim ({code_dim}) must be a positive multiple of num_heads ({num_heads}).")
        unknown = set(regularizer_weights or {}) - set(REGULARIZER_WEIGHTS)
        if unknown:
            raise ValueError(f"DenseAV: unknown regularizer_weights {sorted(unknown)}; known: {sorted(REGULARIZER_WEIGHTS)}.")
        low, high = (float(value) for value in negative_fraction)
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"DenseAV: negative_fraction must be (low, high) with 0 < low <= high < 1, got {negative_fraction}.")
        self.code_dim, self.num_heads = int(code_dim), int(num_heads)
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.image_layer4_stride = int(image_layer4_stride)
        self.cal_init = float(cal_init)
        self.regularizer_weights = dict(regularizer_weights or {})
        self.image_pool_width = int(image_pool_width)
        self.quad_mixup = float(quad_mixup)
        self.negative_audio = bool(negative_audio)
        self.negative_fraction = (low, high)
        self.extra_audio_masking = bool(extra_audio_masking)
        self.pretrain_steps = int(pretrain_steps)
        self.pretrain_learning_rate = float(pretrain_learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.attention_heads = int(attention_heads)
        self.image_lora_rank, self.lora_alpha = int(image_lora_rank), float(lora_alpha)
        self.norm_vectors = bool(norm_vectors)
        self.seed = int(seed)
        dtype = self.dtype_policy
        self.custom_featurizers = image_featurizer is not None or audio_featurizer is not None
        if image_featurizer is None:
            image_featurizer = encoders.resnet18_backbone(3, self.image_layer4_stride, "image_resnet18", dtype=dtype,
                                                          **self.backbone_kwargs)
        if audio_featurizer is None:
            audio_featurizer = spectrogram_cnn(self.backbone_kwargs.get("width", 64), name="audio_cnn", dtype=dtype)
        self.image_backbone = as_keras_model(image_featurizer, "DenseAV image_featurizer")
        self.audio_backbone = as_keras_model(audio_featurizer, "DenseAV audio_featurizer")
        if self.image_lora_rank > 0:
            enable_image_lora(self.image_backbone, self.image_lora_rank, self.lora_alpha)
        self.image_encoder = image_aligner(self.image_backbone, self.code_dim, dtype=dtype)
        self.audio_encoder = audio_aligner(self.audio_backbone, self.code_dim, self.attention_heads, dtype=dtype)
        self.theta = self.add_weight(shape=(), initializer=keras.initializers.Constant(math.log(self.cal_init)),
                                     name="calibration_log_weight", dtype="float32")
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    # ----------------------------------------------------------------- features
    def call(self, inputs, training=False):
        """Returns {"image_maps": [B, h, w, D], "audio_maps": [B, t, D]} (aligned, not pooled)."""
        images, audio = split_inputs(inputs)
        return {"image_maps": self.image_encoder(images, training=training),
                "audio_maps": self.audio_encoder(audio, training=training)}

    def prepare_features(self, image_maps, audio_maps, training=False):
        """The official `prep_feats`: in training the image features' `image_pool_width` average pooling, then with
        `norm_vectors` unit vectors over channels (float32). Returns (image_maps, audio_maps)."""
        if training and self.image_pool_width > 1:
            width = self.image_pool_width
            image_maps = ops.average_pool(image_maps, width, strides=width, padding="valid")
        if self.norm_vectors:
            image_maps, audio_maps = l2_normalize(image_maps), l2_normalize(audio_maps)
        return image_maps, audio_maps

    def time_mask(self, audio, steps):
        """The silence mask at the aligned time rate [B, steps] (1 = not silent)."""
        return resize_time_mask(silence_mask(audio), steps, discrete=True)

    def head_maps(self, images, audio):
        """(matched-pair similarity per head and time step [B, K, h, w, t], silence mask [B, t])."""
        features = self(images_and_audio(images, audio), training=False)
        image_maps, audio_maps = self.prepare_features(features["image_maps"], features["audio_maps"])
        mask = self.time_mask(audio, audio_maps.shape[1] if audio_maps.shape[1] is not None else ops.shape(audio_maps)[1])
        return paired_similarity(audio_maps, image_maps, self.num_heads), mask

    def similarity_maps(self, images, audio):
        """The official evaluation heatmap at feature resolution [B, h, w]: max over heads, mean over the
        non-silent time steps (`eval_utils.prep_heatmap` before its normalisation)."""
        sims, mask = self.head_maps(images, audio)
        return masked_time_mean(ops.max(sims, axis=1), mask)

    def evaluation_outputs(self, images, audio):
        """Everything DenseAV's evaluations read, from one forward pass: "maps" [B, h, w] (`similarity_maps`),
        "sims" [B, h, w, t] (max over heads, per time step), "scores" [B, K] (each pair's "misa" score per head: max over space, mean over non-silent time), the
        aligned "image_maps" and "audio_maps", and the silence "mask" [B, t]."""
        features = self(images_and_audio(images, audio), training=False)
        image_maps, audio_maps = self.prepare_features(features["image_maps"], features["audio_maps"])
        mask = self.time_mask(audio, audio_maps.shape[1])
        sims = paired_similarity(audio_maps, image_maps, self.num_heads)
        heads_max = ops.max(sims, axis=1)  # [B, h, w, t]
        return {"maps": masked_time_mean(heads_max, mask), "sims": heads_max,
                "scores": masked_time_mean(ops.max(sims, axis=(2, 3)), mask),
                "image_maps": image_maps, "audio_maps": audio_maps, "mask": mask}

    def _localize_maps(self, images, audio, size):
        return upsample_maps(self.similarity_maps(images, audio), size, align_corners=self.upsample_align_corners)

    def localize_heads(self, images, audio, image_size=None, over_time=False):
        """Each head's heatmap, averaged over time [B, K, H, W], or per time step [B, K, t, H, W] (numpy)."""
        images = ops.convert_to_tensor(images)
        size = tuple(int(side) for side in (image_size or (images.shape[1], images.shape[2])))
        maps, mask = self.head_maps(images, ops.convert_to_tensor(audio))  # [B, K, h, w, t], [B, t]
        if not over_time:
            maps = masked_time_mean(maps, mask)[..., None]
        batch, heads, steps = ops.shape(maps)[0], maps.shape[1], ops.shape(maps)[-1]
        flat = ops.reshape(ops.transpose(maps, (0, 1, 4, 2, 3)), (-1, maps.shape[2], maps.shape[3]))
        up = ops.reshape(upsample_maps(flat, size), (batch, heads, steps, size[0], size[1]))
        up = ops.convert_to_numpy(up)
        return up if over_time else up[:, :, 0]

    # ----------------------------------------------------------------- training
    def learning_rate_schedule(self, learning_rate=None):
        """The two-phase schedule (`DenseAVSchedule`); `learning_rate` sets phase 2's rate."""
        return DenseAVSchedule(learning_rate or self.default_learning_rate, self.pretrain_steps,
                               self.pretrain_learning_rate, self.warmup_steps)

    def _augment(self, images, audio):
        """Training batch -> (images, audio, frame mask [B, T], positive frame mask [B, T], pixel mask [B, H, W])."""
        audio = ops.cast(audio, "float32")
        silent = silence_mask(audio)
        batch, frames = ops.shape(audio)[0], audio.shape[1] if audio.shape[1] is not None else ops.shape(audio)[1]
        frames_f = ops.cast(frames, "float32")
        floor = ops.min(audio, axis=(1, 2, 3), keepdims=True)
        positive = ops.ones((batch, frames), "float32")
        if self.negative_audio:
            low, high = self.negative_fraction
            span = ops.floor(keras.random.uniform((batch,), low, high, seed=self.seed_generator) * frames_f)
            start = ops.floor(keras.random.uniform((batch,), seed=self.seed_generator) * (frames_f - span + 1.0))
            easing = ops.minimum(ops.maximum(ops.floor(span / 4.0), MIN_WINDOW_SECONDS * FRAMES_PER_SECOND),
                                 ops.floor(span / 2.0))
            positive = raised_cosine_weights(frames, start, span, easing)
            weight = positive[:, :, None, None]
            audio = weight * audio + (1.0 - weight) * ops.roll(audio, 1, axis=0)
        mask = silent
        if self.extra_audio_masking:
            shortest = ops.minimum(MIN_WINDOW_SECONDS * FRAMES_PER_SECOND, frames_f)
            window = ops.floor(shortest + keras.random.uniform((batch,), seed=self.seed_generator) * (frames_f - shortest + 1.0))
            window = ops.minimum(window, frames_f)
            start = ops.floor(keras.random.uniform((batch,), seed=self.seed_generator) * (frames_f - window + 1.0))
            index = ops.cast(ops.arange(frames), "float32")[None, :]
            windowed = ops.cast((index >= start[:, None]) & (index < (start + window)[:, None]), "float32")
            chosen = ops.cast(keras.random.uniform((batch, 1), seed=self.seed_generator) < 0.5, "float32")
            mask = mask * (chosen * windowed + (1.0 - chosen))
            audio = ops.where(mask[:, :, None, None] > 0, audio, floor)
        pixel_mask = None
        if self.quad_mixup > 0 and images.shape[1] is not None and images.shape[1] % 2 == 0 and images.shape[2] % 2 == 0:
            position = ops.cast(keras.random.uniform((batch,), 0, 4, seed=self.seed_generator), "int32")
            position = ops.minimum(position, 3)
            grids, own = quad_grid(ops.cast(images, "float32"), position)
            mixed = keras.random.uniform((batch,), seed=self.seed_generator) < self.quad_mixup
            images = ops.where(mixed[:, None, None, None], grids, ops.cast(images, "float32"))
            pixel_mask = ops.where(mixed[:, None, None], own, 1.0)
        return images, audio, mask, positive, pixel_mask

    def compute_batch_terms(self, x, y, training):
        images, audio = split_inputs(x)
        frames = ops.shape(audio)[1]
        pixel_mask = None
        if training:
            images, audio, mask, positive, pixel_mask = self._augment(images, audio)
        else:
            mask, positive = silence_mask(audio), ops.ones((ops.shape(audio)[0], frames), "float32")
        features = self({"image": images, "audio": audio}, training=training)
        image_maps, audio_maps = self.prepare_features(features["image_maps"], features["audio_maps"], training)
        steps = audio_maps.shape[1] if audio_maps.shape[1] is not None else ops.shape(audio_maps)[1]
        audio_mask = resize_time_mask(mask, steps, discrete=True)
        positive_mask = resize_time_mask(positive, steps, discrete=False)
        image_mask = None
        if pixel_mask is not None:
            image_mask = ops.image.resize(pixel_mask[..., None], (image_maps.shape[1], image_maps.shape[2]),
                                          interpolation="area")[..., 0]
        audio_maps, image_maps, audio_mask, positive_mask, image_mask = self.global_batch(
            (audio_maps, image_maps, audio_mask, positive_mask, image_mask))
        terms = denseav_loss_terms(audio_maps, image_maps, self.theta, self.num_heads, audio_mask, positive_mask,
                                   image_mask, self.regularizer_weights, self.cal_init)
        terms.pop("sims")
        return terms

    def apply_gradients(self, gradients, variables):
        """Phase 1 (`pretrain_steps`): the featurizers' gradients are zeroed, so only the aligners and the
        calibration learn; then everything."""
        if self.pretrain_steps > 0:
            featurizers = {id(v) for v in self.image_backbone.trainable_variables + self.audio_backbone.trainable_variables}
            on = ops.cast(self.optimizer.iterations >= self.pretrain_steps, "float32")
            gradients = [None if g is None else (g * ops.cast(on, g.dtype) if id(v) in featurizers else g)
                         for g, v in zip(gradients, variables)]
        self.optimizer.apply(gradients, variables)

    def get_config(self):
        config = super().get_config()
        config.update({"code_dim": self.code_dim, "num_heads": self.num_heads, "backbone_kwargs": self.backbone_kwargs,
                       "image_layer4_stride": self.image_layer4_stride, "cal_init": self.cal_init,
                       "regularizer_weights": self.regularizer_weights, "image_pool_width": self.image_pool_width,
                       "quad_mixup": self.quad_mixup, "negative_audio": self.negative_audio,
                       "negative_fraction": list(self.negative_fraction),
                       "extra_audio_masking": self.extra_audio_masking, "pretrain_steps": self.pretrain_steps,
                       "pretrain_learning_rate": self.pretrain_learning_rate, "warmup_steps": self.warmup_steps,
                       "attention_heads": self.attention_heads, "image_lora_rank": self.image_lora_rank,
                       "lora_alpha": self.lora_alpha, "norm_vectors": self.norm_vectors, "seed": self.seed})
        if self.custom_featurizers:
            config["image_featurizer"] = keras.saving.serialize_keras_object(self.image_backbone)
            config["audio_featurizer"] = keras.saving.serialize_keras_object(self.audio_backbone)
        return config
