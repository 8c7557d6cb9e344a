"""What the stamps builder varies beyond its first recipe: the "wide" training distribution and the second,
out-of-generator recipe of `val_ood` / `test_ood`.

A localiser trained on one recipe can learn the recipe: its backgrounds, its object sizes, its loudness. Two
things guard against that (docs/generalisation.md):

* `variety="wide"` (domain randomisation of the training scenes, `VARIETY`): backgrounds are the scratch photos,
  procedural textures (gravel, brick, grass, stripes) or plain colour gradients; 0-3 distractors, half of them
  silent objects of classes that sound in other scenes; objects from 2%
  to 45% of the frame, overlapping up to half the smaller one; clip levels from -45 to -5 dBFS RMS instead of one
  peak level; a quarter of the clips silent over a leading or trailing part; real ambience at 0-25 dB SNR half of
  the time.
* `val_ood` / `test_ood` (`OOD_RECIPE`), a second recipe that training never sees: backgrounds from two other
  Debian packages (`mate-backgrounds`' nature photos, `mypaint-data-extras`' paper and canvas textures), the
  recordings no training split hears (`assign_unseen_recordings`), objects 4-35% of the frame with 1-2
  distractors (half of them of sounding classes), drawn with a soft drop shadow and a slight defocus, sometimes cut by the frame border, clips near
  -23 dBFS (EBU R 128's programme level) and JPEG quality 60.

Everything here is a pure function of the generator it is given, so builds stay byte-identical for a seed.
"""

import os

import numpy as np

OOD_BACKGROUND_DIRS = ("/usr/share/backgrounds/mate/nature", "/usr/share/mypaint/backgrounds")
"""Where `val_ood` / `test_ood` take their backgrounds (Debian packages `mate-backgrounds`, `mypaint-data-extras`;
`tools/setup.sh` installs them). No other split uses them."""

OOD_PACKAGES = "mate-backgrounds mypaint-data-extras"

VARIETY = {
    "narrow": dict(backgrounds={"photo": 1.0}, fractions=(0.03, 0.40), log_fractions=False, distractors=(1, 2),
                   sounding_distractors=0.0, max_overlap=0.25, min_visible=0.5, level_db=None, partial_silence=0.0,
                   ambience=0.0, ambience_snr_db=(10.0, 20.0)),
    "wide": dict(backgrounds={"photo": 0.5, "texture": 0.3, "plain": 0.2}, fractions=(0.02, 0.45), log_fractions=True,
                 distractors=(0, 3), sounding_distractors=0.0, max_overlap=0.5, min_visible=0.4,
                 level_db=(-45.0, -5.0), partial_silence=0.25, ambience=0.5, ambience_snr_db=(0.0, 25.0)),
}
"""Scene distributions of the single-source splits: "narrow" is the first recipe (its values are the builder's
historical constants), "wide" the domain-randomised one. `fractions`: range of each box's share of the frame
(log-uniform when `log_fractions`); `distractors`: (min, max) silent objects, each of a class that sounds in other
scenes with probability `sounding_distractors` (then only the audio tells it from the source); `max_overlap`: of
the smaller box; `min_visible`: share of each object left visible; `level_db`: range of the clip's RMS level (None:
peak 0.9); `partial_silence`: chance that the source is silent over 25-60% of the clip; `ambience`: chance of real
ambience at `ambience_snr_db`."""

OOD_RECIPE = dict(backgrounds={"ood": 1.0}, fractions=(0.04, 0.35), log_fractions=False, distractors=(1, 2),
                  sounding_distractors=0.5, max_overlap=0.25, min_visible=0.5, level_db=(-26.0, -20.0),
                  partial_silence=0.0, ambience=0.3, ambience_snr_db=(15.0, 25.0), shadow=True, defocus=True,
                  border_cut=0.3, jpeg_quality=60)
"""The second recipe (`val_ood`, `test_ood`)."""


def recipe(split, variety):
    """The scene distribution of `split` under the build's `variety` ("narrow" or "wide")."""
    if split.endswith("_ood"):
        return OOD_RECIPE
    if variety not in VARIETY:
        raise ValueError(f"variety must be one of {', '.join(VARIETY)}, got {variety!r}")
    return VARIETY[variety] if split in ("train", "val", "test", "val_unseen", "test_unseen") else VARIETY["narrow"]


def ood_backgrounds():
    """Sorted absolute paths of the out-of-generator backgrounds (empty when the packages are missing)."""
    found = []
    for folder in OOD_BACKGROUND_DIRS:
        for parent, _, names in os.walk(folder):
            found += [os.path.join(parent, name) for name in names if name.lower().endswith((".jpg", ".png"))]
    return sorted(found)


def split_ood_backgrounds(paths, seed):
    """Disjoint halves {"val", "test"} of the out-of-generator backgrounds (a seeded shuffle)."""
    order = np.random.default_rng([int(seed), 11]).permutation(len(paths))
    names = [paths[i] for i in order]
    half = max(1, len(names) // 3)
    return {"val": sorted(names[:half]), "test": sorted(names[half:])}


def draw_kind(rng, weights):
    kinds = sorted(weights)
    probabilities = np.array([weights[k] for k in kinds], np.float64)
    return kinds[int(rng.choice(len(kinds), p=probabilities / probabilities.sum()))]


def _smooth_noise(rng, size, scale, anisotropy=1.0):
    """Gaussian-filtered white noise in [0, 1], feature size about `scale` pixels (stretched along y)."""
    import cv2

    noise = rng.standard_normal((size, size)).astype(np.float32)
    sigma = max(0.5, float(scale))
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, sigmaY=sigma * anisotropy)
    noise -= noise.min()
    return noise / max(float(noise.max()), 1e-6)


def texture_background(size, rng):
    """A procedural ground: "gravel", "brick", "grass" or "stripes", coloured at random, float32 [S, S, 3]."""
    kind = ("gravel", "brick", "grass", "stripes")[int(rng.integers(0, 4))]
    base = rng.uniform(0.15, 0.85, 3).astype(np.float32)
    other = np.clip(base + rng.uniform(-0.35, 0.35, 3), 0.0, 1.0).astype(np.float32)
    if kind == "gravel":
        fine, coarse = _smooth_noise(rng, size, size / 150), _smooth_noise(rng, size, size / 30)
        value = 0.6 * fine + 0.4 * coarse
    elif kind == "grass":
        value = 0.7 * _smooth_noise(rng, size, size / 200, anisotropy=8.0) + 0.3 * _smooth_noise(rng, size, size / 20)
    elif kind == "brick":
        rows = int(rng.integers(6, 16))
        height = size / rows
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        row = np.floor(y / height)
        width = height * rng.uniform(1.8, 3.0)
        shifted = x + (row % 2) * width / 2
        mortar = (np.mod(y, height) < height * 0.12) | (np.mod(shifted, width) < height * 0.12)
        value = np.where(mortar, 0.0, 0.7 + 0.3 * _smooth_noise(rng, size, size / 100)).astype(np.float32)
    else:
        period = rng.uniform(size / 30, size / 6)
        angle = rng.uniform(0, np.pi)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        value = 0.5 + 0.5 * np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period)
        value = value * 0.8 + 0.2 * _smooth_noise(rng, size, size / 80)
    return (base[None, None] * value[..., None] + other[None, None] * (1.0 - value[..., None])).astype(np.float32)


def plain_background(size, rng):
    """A plain colour with a gentle linear gradient and light sensor noise, float32 [S, S, 3]."""
    first, second = rng.uniform(0.05, 0.95, 3), rng.uniform(0.05, 0.95, 3)
    second = first + (second - first) * 0.3
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    t = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0, 1)[..., None]
    image = first[None, None] * (1 - t) + second[None, None] * t
    image = image + rng.normal(0.0, 0.01, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def file_background(path, size, rng, cache):
    """A random square crop (60-100% of the short side) of an image file, flipped half of the time, [S, S, 3]."""
    import cv2

    if path not in cache:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"{path}: unreadable background image; reinstall `{OOD_PACKAGES}`")
        longest = max(bgr.shape[:2])
        if longest > 1024:  # wallpapers are up to 5k wide: decode once, keep a working size
            factor = 1024 / longest
            bgr = cv2.resize(bgr, (int(bgr.shape[1] * factor), int(bgr.shape[0] * factor)), interpolation=cv2.INTER_AREA)
        cache[path] = bgr[..., ::-1].astype(np.float32) / 255.0
    image = cache[path]
    height, width = image.shape[:2]
    side = int(round(min(height, width) * rng.uniform(0.6, 1.0)))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = image[top: top + side, left: left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)


def draw_fractions(rng, count, settings):
    low, high = settings["fractions"]
    if settings["log_fractions"]:
        return np.exp(rng.uniform(np.log(low), np.log(high), size=count))
    return rng.uniform(low, high, size=count)


def drop_shadow(canvas, alpha, rng, settings):
    """The second recipe's soft drop shadow: `canvas` darkened under the object's full-frame `alpha` [S, S], shifted
    1-3% of the frame down and right and blurred (call before pasting the object). Unchanged without `shadow`."""
    import cv2

    if not settings.get("shadow"):
        return canvas
    size = canvas.shape[0]
    dx, dy = (int(round(v)) for v in rng.uniform(0.01, 0.03, 2) * size)
    shifted = np.zeros_like(alpha)
    shifted[dy:, dx:] = alpha[: size - dy, : size - dx]
    shadow = cv2.GaussianBlur(shifted, (0, 0), sigmaX=max(1.0, size / 100)) * rng.uniform(0.3, 0.5)
    return canvas * (1.0 - shadow[..., None])


def finish_frame(image, rng, settings):
    """The frame's last touch in the second recipe: a slight defocus (Gaussian sigma 0.5-1.2 px at 224)."""
    import cv2

    if not settings.get("defocus"):
        return image
    sigma = rng.uniform(0.5, 1.2) * image.shape[0] / 224
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)


def partly_silent(clip, rng, sample_rate):
    """`clip` silent over a leading or trailing 25-60% (10 ms fades): sound that starts or stops within the clip."""
    length = len(clip)
    silent = int(length * rng.uniform(0.25, 0.6))
    fade = max(1, sample_rate // 100)
    gain = np.ones(length, np.float32)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    if rng.random() < 0.5:  # silence first, then the sound
        gain[:silent] = 0.0
        gain[silent: silent + fade] = ramp[: len(gain[silent: silent + fade])]
    else:
        gain[length - silent:] = 0.0
        start = max(0, length - silent - fade)
        gain[start: length - silent] = ramp[::-1][: length - silent - start]
    return clip * gain


def level_gain(mix, rng, settings, peak_level):
    """The gain that brings `mix` to the recipe's level: an RMS level drawn from `level_db` (never above
    `peak_level` at its peak), or the first recipe's peak normalisation to `peak_level`. Returns (gain, level
    in dBFS RMS after the gain)."""
    peak = max(float(np.max(np.abs(mix))), 1e-9)
    rms = float(np.sqrt(np.mean(mix.astype(np.float64) ** 2)) + 1e-12)
    if settings.get("level_db") is None:
        gain = peak_level / peak
    else:
        gain = min(10 ** (rng.uniform(*settings["level_db"]) / 20.0) / rms, peak_level / peak)
    return gain, round(20.0 * np.log10(rms * gain), 2)
