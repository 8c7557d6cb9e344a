"""Training-time augmentation, as TensorFlow ops inside the tf.data pipeline.

`Augmentation` is a small, JSON-serialisable description; `Augmentation()` is exactly the published
training augmentation of LVS / EZ-VSL / AVGN (resize the short side to 1.1 S, random S x S crop, random
horizontal flip; the audio clip is the centred one), and every other field defaults to "off". Named
presets (`AUGMENTATIONS`): "official" (the default) and "strong" (scale and translation jitter that move
the picture against the image border, colour jitter and blur; gain, time shift, additive noise, speed
changes and SpecAugment-style masks on the audio), used by the demo because it generalises to recordings
and backgrounds the training set never had (docs/demo.md).

`make_dataset(training=True)` keeps the published streaming pipeline for the official augmentation, and
switches to `keras_avloc.data.augmented` (in-graph augmentation of decoded base samples, optionally cached
in memory) for any other augmentation or with `cache=True`.

Example:
>>> from keras_avloc.data import make_dataset
>>> train = make_dataset("datasets/stamps", "train", training=True, cache=True, augment="strong")  # doctest: +SKIP
"""

import dataclasses
import math

TRAIN_RESIZE_FACTOR = 1.1
"""The published pipelines resize the short side to int(1.1 * S) before the random S x S crop."""


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """What `make_dataset(training=True)` does to each training sample.

    Image (applied to the frame resized to int(1.1 S) on its short side):
        crop_scale: (low, high) side of the random crop as a fraction of that frame's short side; the
            crop is then resized to S x S. The default (1/1.1, 1/1.1) is the published random S x S crop.
        crop_ratio: (low, high) aspect ratio (width / height) of the crop, sampled log-uniformly.
        flip: random horizontal flip.
        brightness, contrast, saturation: maximum relative change (0 = off).
        hue: maximum hue shift as a fraction of the colour circle.
        blur_probability: chance of a Gaussian blur with sigma uniform in `blur_sigma` (output pixels).
    Audio (on the waveform, before the spectrogram):
        time_shift: seconds the clip may move away from the centred one (0 = the published centre clip).
        gain_db: random gain in [-gain_db, +gain_db] dB.
        noise_probability: chance of additive white noise at an SNR uniform in `noise_snr_db`.
        speed: maximum relative speed change (resampling: duration and pitch change together).
    Batch (`add_ambience`, after the clips are cut):
        ambience_probability: chance that a clip gets another clip of its batch as quiet background, at a
            signal-to-ambience ratio uniform in `ambience_snr_db` (real sounds of other scenes, unlike the
            white noise).
    Spectrogram (SpecAugment-style, on the front-end's output):
        freq_masks / freq_mask_width, time_masks / time_mask_width: number of masks and maximum width in bins
        / frames; masked cells are set to the spectrogram's mean.
    """

    crop_scale: tuple = (1.0 / TRAIN_RESIZE_FACTOR, 1.0 / TRAIN_RESIZE_FACTOR)
    crop_ratio: tuple = (1.0, 1.0)
    flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    blur_probability: float = 0.0
    blur_sigma: tuple = (0.3, 1.5)
    time_shift: float = 0.0
    gain_db: float = 0.0
    noise_probability: float = 0.0
    noise_snr_db: tuple = (10.0, 30.0)
    speed: float = 0.0
    ambience_probability: float = 0.0
    ambience_snr_db: tuple = (10.0, 20.0)
    freq_masks: int = 0
    freq_mask_width: int = 0
    time_masks: int = 0
    time_mask_width: int = 0

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"Augmentation.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}.")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"Augmentation.crop_ratio must be positive and ordered, got {self.crop_ratio}.")
        for name in ("brightness", "contrast", "saturation", "hue", "blur_probability", "time_shift", "gain_db",
                     "noise_probability", "speed", "ambience_probability"):
            if getattr(self, name) < 0:
                raise ValueError(f"Augmentation.{name} must be >= 0, got {getattr(self, name)}.")
        if self.speed >= 0.5 or self.noise_probability > 1 or self.blur_probability > 1 or self.ambience_probability > 1:
            raise ValueError("Augmentation: speed must be < 0.5 and probabilities <= 1.")

    def to_dict(self):
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}

    @property
    def is_official(self):
        return self == Augmentation()

    @property
    def masks_spectrogram(self):
        return bool(self.freq_masks and self.freq_mask_width) or bool(self.time_masks and self.time_mask_width)


AUGMENTATIONS = {
    "official": Augmentation(),
    "strong": Augmentation(
        crop_scale=(0.55, 1.0), crop_ratio=(3.0 / 4.0, 4.0 / 3.0), flip=True, brightness=0.3, contrast=0.3,
        saturation=0.3, hue=0.04, blur_probability=0.3, blur_sigma=(0.3, 1.5),
        time_shift=0.5, gain_db=6.0, noise_probability=0.5, noise_snr_db=(10.0, 30.0), speed=0.1,
        freq_masks=2, freq_mask_width=24, time_masks=2, time_mask_width=12,
    ),
}


def get_augmentation(value):
    """An `Augmentation` from None (official), a preset name, a dict of fields, or an `Augmentation`."""
    if value is None:
        return Augmentation()
    if isinstance(value, Augmentation):
        return value
    if isinstance(value, str):
        if value not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {value!r}; choose one of {', '.join(AUGMENTATIONS)}.")
        return AUGMENTATIONS[value]
    if isinstance(value, dict):
        fields = {field.name for field in dataclasses.fields(Augmentation)}
        unknown = set(value) - fields
        if unknown:
            raise ValueError(f"unknown augmentation fields {sorted(unknown)}; known: {sorted(fields)}.")
        return Augmentation(**{key: tuple(item) if isinstance(item, list) else item for key, item in value.items()})
    raise TypeError(f"augment must be None, a name, a dict or an Augmentation, got {type(value).__name__}.")


# --------------------------------------------------------------------------- image (one sample, float 0..255)
def crop_and_flip(tf, image, size, augmentation, seed):
    """A random crop (scale / aspect jitter) of a [H, W, 3] frame resized to [size, size], maybe flipped."""
    height, width = image.shape[0], image.shape[1]
    short = min(height, width)
    seeds = tf.random.experimental.stateless_split(seed, 5)
    low, high = augmentation.crop_scale
    side = tf.random.stateless_uniform([], seeds[0], low, high) * short
    log_ratio = tf.random.stateless_uniform([], seeds[1], math.log(augmentation.crop_ratio[0]),
                                            math.log(augmentation.crop_ratio[1]) + 1e-12)
    ratio = tf.exp(log_ratio)
    crop_h = tf.minimum(side / tf.sqrt(ratio), float(height))
    crop_w = tf.minimum(side * tf.sqrt(ratio), float(width))
    top = tf.random.stateless_uniform([], seeds[2], 0.0, 1.0) * (float(height) - crop_h)
    left = tf.random.stateless_uniform([], seeds[3], 0.0, 1.0) * (float(width) - crop_w)
    if augmentation.crop_scale[0] == augmentation.crop_scale[1] and augmentation.crop_ratio == (1.0, 1.0) and \
            abs(augmentation.crop_scale[0] * short - size) < 0.5:
        # The published crop: integer offsets, no resampling.
        top_i = tf.cast(tf.floor(top), tf.int32)
        left_i = tf.cast(tf.floor(left), tf.int32)
        out = image[top_i : top_i + size, left_i : left_i + size]
    else:
        box = tf.stack([top / height, left / width, (top + crop_h) / height, (left + crop_w) / width])
        out = tf.image.crop_and_resize(image[None], box[None], [0], [size, size], method="bilinear")[0]
    if augmentation.flip:
        flip = tf.random.stateless_uniform([], seeds[4]) < 0.5
        out = tf.cond(flip, lambda: out[:, ::-1], lambda: out)
    return tf.ensure_shape(out, [size, size, 3])


def colour_and_blur(tf, image, augmentation, seed):
    """Brightness / contrast / saturation / hue jitter and an optional Gaussian blur of a [S, S, 3] 0..255 image."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    x = image / 255.0
    if augmentation.brightness:
        x = x * tf.random.stateless_uniform([], seeds[0], 1 - augmentation.brightness, 1 + augmentation.brightness)
    if augmentation.contrast:
        mean = tf.reduce_mean(x)
        x = (x - mean) * tf.random.stateless_uniform([], seeds[1], 1 - augmentation.contrast,
                                                     1 + augmentation.contrast) + mean
    if augmentation.saturation:
        grey = tf.reduce_mean(x, axis=-1, keepdims=True)
        x = grey + (x - grey) * tf.random.stateless_uniform([], seeds[2], 1 - augmentation.saturation,
                                                            1 + augmentation.saturation)
    if augmentation.hue:
        x = tf.image.adjust_hue(tf.clip_by_value(x, 0.0, 1.0),
                                tf.random.stateless_uniform([], seeds[3], -augmentation.hue, augmentation.hue))
    x = tf.clip_by_value(x, 0.0, 1.0)
    if augmentation.blur_probability:
        sigma = tf.random.stateless_uniform([], seeds[4], *augmentation.blur_sigma)
        blurred = gaussian_blur(tf, x, sigma)
        x = tf.where(tf.random.stateless_uniform([], seeds[5]) < augmentation.blur_probability, blurred, x)
    return x * 255.0


def gaussian_blur(tf, image, sigma, radius=3):
    """Separable Gaussian blur of [H, W, C] with a (2 radius + 1)-tap kernel of standard deviation `sigma`."""
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / tf.maximum(sigma, 1e-3)))
    kernel = kernel / tf.reduce_sum(kernel)
    channels = image.shape[-1]
    x = image[None]
    vertical = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    horizontal = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    x = tf.nn.depthwise_conv2d(tf.pad(x, [[0, 0], [radius, radius], [0, 0], [0, 0]], "REFLECT"), vertical,
                               [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(tf.pad(x, [[0, 0], [0, 0], [radius, radius], [0, 0]], "REFLECT"), horizontal,
                               [1, 1, 1, 1], "VALID")
    return x[0]


# --------------------------------------------------------------------------- audio (one sample)
def audio_clip(tf, wave, length, augmentation, sample_rate, seed):
    """A `length`-sample clip of a cached wave (centred unless `time_shift`), with speed, gain and noise.

    The cached wave holds the centred `length + 2 * time_shift` seconds (tiled when shorter)."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    total = wave.shape[0]
    rate = 1.0
    if augmentation.speed:
        rate = tf.random.stateless_uniform([], seeds[0], 1 - augmentation.speed, 1 + augmentation.speed)
    span = tf.cast(length, tf.float32) * rate  # source samples the clip covers
    centre_start = (float(total) - span) / 2.0
    shift = augmentation.time_shift * sample_rate
    start = centre_start + (tf.random.stateless_uniform([], seeds[1], -shift, shift) if shift else 0.0)
    start = tf.clip_by_value(start, 0.0, tf.maximum(float(total) - span, 0.0))
    if augmentation.speed:
        positions = start + tf.range(length, dtype=tf.float32) * rate
        low = tf.clip_by_value(tf.floor(positions), 0.0, float(total - 1))
        frac = positions - low
        low_i = tf.cast(low, tf.int32)
        high_i = tf.minimum(low_i + 1, total - 1)
        clip = tf.gather(wave, low_i) * (1.0 - frac) + tf.gather(wave, high_i) * frac
    else:
        clip = wave[tf.cast(tf.round(start), tf.int32):][:length]
        clip = tf.ensure_shape(clip, [length])
    if augmentation.gain_db:
        clip = clip * 10.0 ** (tf.random.stateless_uniform([], seeds[2], -augmentation.gain_db,
                                                            augmentation.gain_db) / 20.0)
    if augmentation.noise_probability:
        snr = tf.random.stateless_uniform([], seeds[3], *augmentation.noise_snr_db)
        power = tf.reduce_mean(tf.square(clip)) + 1e-10
        noise = tf.random.stateless_normal([length], seeds[4]) * tf.sqrt(power / 10.0 ** (snr / 10.0))
        keep = tf.random.stateless_uniform([], tf.stack([seeds[4][1], seeds[3][0]])) < augmentation.noise_probability
        clip = tf.where(keep, clip + noise, clip)
    return tf.clip_by_value(clip, -1.0, 1.0)


def add_ambience(tf, waves, augmentation, seed):
    """Another clip of the batch as quiet background: each clip, with `ambience_probability`, gets clip
    (i + k) mod B (k uniform in 1..B-1, one per clip) scaled to a signal-to-ambience power ratio uniform in
    `ambience_snr_db`. Labels do not change: the added clip is ambience, not a second source.

    Args:
        waves: float [B, T] clips in [-1, 1]; seed: [2] int32.

    Returns:
        float [B, T], clipped to [-1, 1].
    """
    if not augmentation.ambience_probability:
        return waves
    batch = tf.shape(waves)[0]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    offsets = tf.random.stateless_uniform([batch], seeds[0], 1, tf.maximum(batch, 2), dtype=tf.int32)
    partners = tf.gather(waves, (tf.range(batch) + offsets) % batch)
    snr = tf.random.stateless_uniform([batch, 1], seeds[1], *augmentation.ambience_snr_db)
    power = tf.reduce_mean(tf.square(waves), axis=1, keepdims=True) + 1e-10
    partner_power = tf.reduce_mean(tf.square(partners), axis=1, keepdims=True) + 1e-10
    scale = tf.sqrt(power / partner_power / 10.0 ** (snr / 10.0))
    keep = tf.random.stateless_uniform([batch, 1], seeds[2]) < augmentation.ambience_probability
    keep = keep & (batch > 1)
    return tf.clip_by_value(tf.where(keep, waves + scale * partners, waves), -1.0, 1.0)


def mask_spectrograms(tf, spectrograms, augmentation, seed, frequency_axis=1):
    """SpecAugment-style frequency and time masks on a batch (masked cells = the sample mean).

    Args:
        spectrograms: [B, F, T, C] (`frequency_axis=1`, the LVS front-end) or [B, T, F, C] (`frequency_axis=2`,
            the CSOL and AVSA log-mels; see `keras_avloc.data.audio.FRONTEND_FREQUENCY_AXES`).
    """
    if not augmentation.masks_spectrogram:
        return spectrograms
    if frequency_axis not in (1, 2):
        raise ValueError(f"mask_spectrograms: frequency_axis must be 1 or 2, got {frequency_axis!r}.")
    batch = tf.shape(spectrograms)[0]
    time_axis = 3 - frequency_axis
    bins, frames = spectrograms.shape[frequency_axis], spectrograms.shape[time_axis]
    mean = tf.reduce_mean(spectrograms, axis=[1, 2, 3], keepdims=True)
    keep = tf.ones_like(spectrograms[..., :1], dtype=tf.bool)
    seeds = tf.random.experimental.stateless_split(seed, 2 * (augmentation.freq_masks + augmentation.time_masks) + 1)
    index = 0
    for axis, count, width, extent in ((frequency_axis, augmentation.freq_masks, augmentation.freq_mask_width, bins),
                                       (time_axis, augmentation.time_masks, augmentation.time_mask_width, frames)):
        for _ in range(count if width else 0):
            widths = tf.random.stateless_uniform([batch], seeds[index], 0, min(width, extent) + 1, dtype=tf.int32)
            starts = tf.cast(tf.random.stateless_uniform([batch], seeds[index + 1]) *
                             tf.cast(extent - widths + 1, tf.float32), tf.int32)
            index += 2
            positions = tf.range(extent)[None, :]
            inside = (positions >= starts[:, None]) & (positions < (starts + widths)[:, None])  # [B, extent]
            shape = [-1, extent, 1, 1] if axis == 1 else [-1, 1, extent, 1]
            keep = keep & ~tf.reshape(inside, shape)
    return tf.where(keep, spectrograms, mean)
