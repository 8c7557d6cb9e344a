"""Composing one stamps scene: backgrounds, pasted objects and their masks, recording clips, spoken prompts.

Pure functions of a `keras_avloc.data.stamps_media.MediaCache` and a numpy generator; every random draw comes from
the scene's generator, in the order `keras_avloc.data.stamps.render_scene` calls them (a build is byte-identical for
a seed).
"""

import numpy as np

from keras_avloc.data import stamps_variety
from keras_avloc.data.stamps_media import SAMPLE_RATE, StampsError, SEEN_LANGUAGES, UNSEEN_LANGUAGES
from keras_avloc.io import media as media_io

TRAIN_VOICES = (("en-us", 130), ("en-us", 165), ("en-gb-scotland", 145), ("en-gb-x-rp", 180))
"""espeak-ng (voice, words per minute) of the training prompts; test_speech's espeak prompts use the default voice."""


def _colour_jitter(rgb, rng, strength, weight=None):
    """Random brightness, contrast (around the `weight`-weighted mean) and saturation."""
    brightness = 1.0 + rng.uniform(-strength, strength)
    contrast = 1.0 + rng.uniform(-strength, strength)
    saturation = 1.0 + rng.uniform(-strength, strength) * 1.5
    grey = rgb.mean(axis=-1, keepdims=True)
    rgb = grey + (rgb - grey) * saturation
    mean = float(np.average(grey[..., 0], weights=weight)) if weight is not None else float(grey.mean())
    rgb = (rgb - mean) * contrast + mean
    return np.clip(rgb * brightness, 0.0, 1.0)


def _render_background(media, name, size, rng):
    import cv2

    image = media.background(name)
    height, width = image.shape[:2]
    side = int(round(min(height, width) * rng.uniform(0.75, 1.0)))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = image[top: top + side, left: left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    return _colour_jitter(crop, rng, 0.15)


def _patch_size(media, stamp, size, area_fraction):
    """(width, height) of `stamp` scaled so its box covers about `area_fraction` of the frame."""
    height, width = media.stamp(stamp).shape[:2]
    scale = size * np.sqrt(area_fraction / (height * width))
    scale = min(scale, 0.95 * size / max(height, width))
    return max(2, int(round(width * scale))), max(2, int(round(height * scale)))


def _prepare_object(media, stamp, patch_size, rng):
    """The stamp resized to `patch_size`, flipped and colour-jittered: premultiplied RGBA [h, w, 4]."""
    import cv2

    premultiplied = media.stamp(stamp)
    interpolation = cv2.INTER_AREA if patch_size[0] < premultiplied.shape[1] else cv2.INTER_LINEAR
    patch = np.clip(cv2.resize(premultiplied, patch_size, interpolation=interpolation), 0.0, 1.0)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    alpha = patch[..., 3:4]
    straight = np.where(alpha > 1e-3, patch[..., :3] / np.maximum(alpha, 1e-3), 0.0)
    rgb = _colour_jitter(straight, rng, 0.1, weight=alpha[..., 0] + 1e-6)
    return np.concatenate([np.minimum(rgb * alpha, alpha), alpha], axis=-1).astype(np.float32)


def _overlap_ok(boxes, max_overlap=0.25):
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            (ax, ay, aw, ah), (bx, by, bw, bh) = boxes[i], boxes[j]
            inter_w = min(ax + aw, bx + bw) - max(ax, bx)
            inter_h = min(ay + ah, by + bh) - max(ay, by)
            if inter_w > 0 and inter_h > 0 and inter_w * inter_h > max_overlap * min(aw * ah, bw * bh):
                return False
    return True


def _fit_fractions(fractions, sounding, budget, floor):
    """Shrinks box-area fractions to sum to `budget`: distractors first, sounding objects last."""
    fractions = fractions.copy()
    excess = fractions.sum() - budget
    if excess <= 0:
        return fractions
    silent = ~sounding
    room = np.maximum(fractions[silent] - floor, 0.0)
    if room.sum() > 0:
        fractions[silent] -= room * min(1.0, excess / room.sum())
    if fractions.sum() > budget:
        fractions = np.maximum(fractions * budget / fractions.sum(), floor)
    return fractions


def visible_masks(alphas):
    """Boolean masks of what stays visible of each object (drawn in order) once the later ones cover it."""
    masks = []
    for i, alpha in enumerate(alphas):
        visible = alpha.copy()
        for later in alphas[i + 1:]:
            visible *= 1.0 - later
        masks.append(visible > 0.5)
    return masks


def _compose(media, background, objects, size, rng, sounding=None, max_tries=200, settings=None):
    """Pastes `objects` (list of stamp names, drawn in order) on `background`.

    Each box covers 3-40% of the frame (uniformly, like VGG-SS whose median box is about 20%; silent
    distractors shrink first when the boxes would not fit), boxes overlap by at most a quarter of the
    smaller one, and every object stays at least half visible. `settings` (`stamps_variety.recipe`) changes
    these ranges, and may add drop shadows and objects cut by the frame border (the second recipe).

    Returns:
        (rgb float32 [S,S,3], list of bool [S,S] visible masks, one per object).
    """
    settings = settings or stamps_variety.VARIETY["narrow"]
    cut = settings.get("border_cut", 0.0)
    for attempt in range(max_tries):
        if attempt % 20 == 0:
            # New sizes only every 20 placements, so that big objects are not filtered out by retries.
            shrink = 0.85 ** (attempt // 40)
            flags = np.zeros(len(objects), bool) if sounding is None else np.asarray(sounding, bool)
            fractions = _fit_fractions(stamps_variety.draw_fractions(rng, len(objects), settings), flags,
                                       0.6 * shrink, 0.03 * shrink)
            sizes = [_patch_size(media, stamp, size, f) for stamp, f in zip(objects, fractions)]
        boxes = [(int(rng.integers(-int(cut * w), size - w + int(cut * w) + 1)),
                  int(rng.integers(-int(cut * h), size - h + int(cut * h) + 1)), w, h) for w, h in sizes]
        if not _overlap_ok(boxes, settings["max_overlap"]):
            continue
        canvas = background.copy()
        alphas = []
        for stamp, (x, y, w, h) in zip(objects, boxes):
            patch = _prepare_object(media, stamp, (w, h), rng)
            # The part of the patch inside the frame (all of it unless the recipe cuts objects at the border).
            top, left, bottom, right = max(y, 0), max(x, 0), min(y + h, size), min(x + w, size)
            inside = patch[top - y: bottom - y, left - x: right - x]
            alpha = np.zeros((size, size), np.float32)
            alpha[top:bottom, left:right] = inside[..., 3]
            canvas = stamps_variety.drop_shadow(canvas, alpha, rng, settings)
            canvas[top:bottom, left:right] = inside[..., :3] + canvas[top:bottom, left:right] * (1 - inside[..., 3:4])
            alphas.append(alpha)
        masks = visible_masks(alphas)
        if all(mask.sum() >= settings["min_visible"] * max((alpha > 0.5).sum(), 1) and mask.any()
               for mask, alpha in zip(masks, alphas)):
            return stamps_variety.finish_frame(canvas, rng, settings), masks
    raise StampsError(f"could not place {len(objects)} objects in a {size}px frame; use a larger --size")


def _compose_mosaic(media, backgrounds, objects, sounding, size, rng):
    """CSOL's synthetic frame: four solo frames (one object each on its own background) in a 2 x 2 grid.

    Returns:
        (rgb float32 [S, S, 3], list of bool [S, S] masks, one per object, in the order given: cells
        top-left, top-right, bottom-left, bottom-right).
    """
    half = size // 2
    image = np.zeros((size, size, 3), np.float32)
    masks = []
    for cell, (name, stamp, flag) in enumerate(zip(backgrounds, objects, sounding)):
        cell_image, (cell_mask,) = _compose(media, _render_background(media, name, half, rng), [stamp], half, rng,
                                            sounding=[flag])
        top, left = (cell // 2) * half, (cell % 2) * half
        image[top: top + half, left: left + half] = cell_image
        mask = np.zeros((size, size), bool)
        mask[top: top + half, left: left + half] = cell_mask
        masks.append(mask)
    return image, masks


def mask_box(mask):
    """Normalised [x1, y1, x2, y2] of a boolean mask's pixels (x2/y2 exclusive)."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return [round(float(xs.min()) / width, 6), round(float(ys.min()) / height, 6),
            round(float(xs.max() + 1) / width, 6), round(float(ys.max() + 1) / height, 6)]


def _clip_from(wave, length, rng):
    """A `length`-sample window of `wave`, looped with a random phase when `wave` is shorter."""
    if len(wave) >= length:
        start = int(rng.integers(0, len(wave) - length + 1))
        return wave[start: start + length].copy(), start
    phase = int(rng.integers(0, len(wave)))
    return np.take(wave, (phase + np.arange(length)) % len(wave)), phase


def _recording_clip(media, recording, part, length, rng):
    wave, cut = media.recording(recording)
    segment = [0, len(wave)]
    if cut is not None and part != "unseen":
        segment = [0, cut] if part == "train" else [cut, len(wave)]
    clip, offset = _clip_from(wave[segment[0]: segment[1]], length, rng)
    peak = float(np.max(np.abs(clip)))
    clip = clip / peak if peak > 0 else clip
    return clip.astype(np.float32), {"recording": recording, "segment": segment, "offset": offset}


def _choose_recording(catalog_info, class_name, part, rng):
    pool = [r["id"] for r in catalog_info["recordings"] if r["class"] == class_name
            and r["unseen"] == (part == "unseen")]
    return pool[int(rng.integers(0, len(pool)))]


def _rms(wave):
    return float(np.sqrt(np.mean(wave.astype(np.float64) ** 2)) + 1e-12)


def _write_jpg(path, rgb, quality=95):
    media_io.write_jpg(path, np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8), quality=quality)


def _write_wav(path, wave):
    media_io.write_wav(path, wave, SAMPLE_RATE)


def _stamps_of(catalog_info, class_name):
    return [s for s in catalog_info["stamps"] if s["class"] == class_name]


def _pick(items, rng):
    return items[int(rng.integers(0, len(items)))]


def _other_classes(classes, exclude, count, rng):
    pool = [c for c in classes if c not in exclude]
    return [pool[int(i)] for i in rng.choice(len(pool), size=count, replace=False)]


def _spoken_prompt(media, stamp, class_name, languages, rng):
    """(16 kHz wave, text, source, language) of a spoken prompt naming `stamp` (see SPLIT_LANGUAGES).

    "english" (test_speech): the real English description, else espeak-ng's default voice (no random draw);
    "seen": a random one of the stamp's SEEN_LANGUAGES recordings or espeak-ng English in a TRAIN_VOICES voice;
    "unseen": a random one of its UNSEEN_LANGUAGES recordings (espeak-ng English when it has none).
    """
    article = "an" if class_name[0] in "aeiou" else "a"
    tts_text = f"a picture of {article} {class_name}"
    if languages == "english":
        if stamp["desc_audio"]:
            return media.recording(stamp["desc_audio"])[0], stamp["description"], stamp["desc_audio"], "en"
        return media.speech(tts_text), tts_text, "espeak-ng", "en"
    wanted = SEEN_LANGUAGES if languages == "seen" else UNSEEN_LANGUAGES
    options = [lang for lang in wanted if lang in stamp.get("desc_languages", {})]
    if languages == "seen":
        options = options + ["espeak"]
    if not options:
        return media.speech(tts_text), tts_text, "espeak-ng", "en"
    language = _pick(options, rng)
    if language == "espeak":
        voice, rate = TRAIN_VOICES[int(rng.integers(0, len(TRAIN_VOICES)))]
        return media.speech(tts_text, voice, rate), tts_text, f"espeak-ng:{voice}:{rate}", "en"
    source = stamp["desc_languages"][language]
    return media.recording(source)[0], stamp.get("texts", {}).get(language, ""), source, language
