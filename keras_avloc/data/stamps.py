"""The "stamps" benchmark: real photo cut-outs on real background photos, each with its own recording.

No public localisation benchmark can be downloaded offline, so `build_stamps` composes one with exact
ground truth from two Debian packages:

* `tuxpaint-stamps-default`: photo cut-outs with alpha (animals, instruments, tools, ...) that ship
  their own real recording (`name.ogg`) and, for many animals, a spoken description (`name_desc.ogg`).
  The curated list and the photo rule live in `keras_avloc.data.stamps_catalog`.
* `scratch` (unpacked, not installed): real background photos and a few extra real recordings.

Every scene is a pure function of `(seed, split, index)`, so builds are byte-identical for a seed,
resumable (finished scenes are skipped) and independent of the number of workers.

Splits written under `out` (standard layout: frames/, audio/, masks/, <split>.json):
  train, val, test             one sounding object + 1-2 silent distractors of other classes
  val_unseen, test_unseen      as val / test, but every clip is a recording training never hears (see below)
  train_mix, test_mix          two sounding objects of different classes, audio summed at +-5 dB
  test_ext                     the extended protocol: single positives, "silent" scenes (the audio's
                               class is not in the picture) and "offscreen" scenes (a visible source
                               plus an off-screen one)
  test_speech (optional)       2-4 objects and a spoken prompt naming one of them: the stamp's real English
                               description (`name_desc.ogg`), or espeak-ng ("a picture of a hen") without one
  train_speech, val_speech     the same kind of scene for training (DenseAV's speech pairs): real descriptions in
                               the SEEN_LANGUAGES (`name_desc_<lang>.ogg`) and espeak-ng English in several voices
                               and rates; the real English descriptions stay for test_speech
  test_speech_unseen           spoken prompts in languages no other split uses (UNSEEN_LANGUAGES): cross-lingual
  train_mosaic, val_mosaic,    CSOL's "synthetic" protocol: 2 x 2 mosaics of four solo frames (four classes),
  test_mosaic                  two of which sound (audio = their two recordings at +-5 dB), two visible but silent
  test_duet                    CSOL's realistic protocol: two sounding objects and 1-2 silent ones in one frame
  val_interf, test_interf      IEr's interferences, one scenario per scene (INTERFERENCE_SCENARIOS, in turn): two
                               sounding objects at a source-level difference of 0, +-6, +-12 or +-20 dB; an
                               audible class that is not in the frame; visible but silent objects of sounding
                               classes; and all three combined
Speech records carry "prompt" (the text), "language" and "speech" ([start, end] seconds of the prompt).
Interference records carry "scenario" and "interference" {"level_db", "offscreen", "silent"}, with
"level_db" on each source's provenance; their "sources" include the off-screen one ("offscreen": true, no box).
Mosaic, duet and interference records list every visible object in "objects" (class, bbox, mask, sounding); their silent
objects are of sounding classes (heard in other scenes), so a class-aware model has a map to keep quiet.
Backgrounds of train, val and test* are disjoint. A class with several distinct recordings keeps some of
them "unseen" (`assign_unseen_recordings`: a third of them, at least one, preferring the scratch package's
recordings, i.e. another source): they are heard only in val_unseen / test_unseen. The other ("seen")
recordings are trimmed and cut at a quiet point near 60% of their length: train scenes use the first part,
val/test scenes the rest; seen recordings shorter than `MIN_SPLIT_SECONDS` (single short events) are used
whole everywhere.
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
import zlib

import numpy as np

from keras_avloc.data import stamps_catalog as catalog, stamps_variety
from keras_avloc.io import files, media as media_io
from keras_avloc.io.errors import AvlocError

SAMPLE_RATE = 16000
CLIP_SECONDS = 3.0
MIN_SPLIT_SECONDS = 1.0
BUILDER_VERSION = 3  # 2: recordings decoded by keras_avloc.io.media.read_audio (clipped to [-1, 1] after resampling);
# 3: the recording set (duplicates dropped, scratch recordings in training) and the unseen recordings
PEAK_LEVEL = 0.9
SPLIT_FRACTIONS = {"test": 0.3, "val": 0.1}  # of the backgrounds; train gets the rest

SPLIT_BACKGROUNDS = {
    "train": "train", "val": "val", "test": "test", "train_mix": "train",
    "test_mix": "test", "test_ext": "test", "test_speech": "test", "val_unseen": "val", "test_unseen": "test",
    "train_speech": "train", "val_speech": "val", "test_speech_unseen": "test", "train_mosaic": "train", "val_mosaic": "val", "test_mosaic": "test", "test_duet": "test",
    "val_interf": "val", "test_interf": "test", "val_ood": "val", "test_ood": "test",
}
SPLIT_AUDIO_PART = {
    "train": "train", "train_mix": "train", "val": "heldout", "test": "heldout",
    "test_mix": "heldout", "test_ext": "heldout", "test_speech": "heldout", "val_unseen": "unseen",
    "test_unseen": "unseen", "train_speech": "train", "val_speech": "heldout", "test_speech_unseen": "heldout",
    "train_mosaic": "train", "val_mosaic": "heldout", "test_mosaic": "heldout",
    "test_duet": "heldout", "val_interf": "heldout", "test_interf": "heldout", "val_ood": "unseen",
    "test_ood": "unseen",
}
SPLIT_ORDER = ("train", "val", "test", "train_mix", "test_mix", "test_ext", "test_speech", "val_unseen",
               "test_unseen", "train_mosaic", "val_mosaic", "test_mosaic", "test_duet", "train_speech", "val_speech",
               "test_speech_unseen", "val_interf", "test_interf", "val_ood", "test_ood")
SEEN_LANGUAGES = ("be", "bg", "ca", "el", "es", "fr", "ru")
"""Languages of the real spoken descriptions in train_speech / val_speech (with espeak-ng English)."""
UNSEEN_LANGUAGES = ("da", "nl", "ro")
"""Languages only test_speech_unseen speaks (real recordings in Tux Paint)."""
TRAIN_VOICES = (("en-us", 130), ("en-us", 165), ("en-gb-scotland", 145), ("en-gb-x-rp", 180))
"""espeak-ng (voice, words per minute) of the training prompts; test_speech's espeak prompts use the default voice."""
SPLIT_LANGUAGES = {"train_speech": "seen", "val_speech": "seen", "test_speech": "english",
                   "test_speech_unseen": "unseen"}
MULTI_OBJECT_KINDS = ("mosaic", "duet", "interference")
INTERFERENCE_SCENARIOS = ("volume_0db", "volume_6db", "volume_12db", "volume_20db", "offscreen", "silent", "combined")
"""Scene `index` of an interference split shows scenario `index % 7`. volume_Xdb: two visible sounding objects, the
second X dB above or below the first (the sign alternates); offscreen: one visible sounding object and an audible
class not in the frame (0 dB); silent: one sounding object and 1-2 visible silent objects of sounding classes;
combined: two sounding objects at 0/6/12/20 dB, an off-screen source and one silent object."""


class StampsError(AvlocError, ValueError):
    """Stamps build settings that cannot work (unknown classes, objects that do not fit, another build in --out)."""


class OtherBuildError(StampsError):
    """The output folder holds a stamps build made with other settings."""


class MediaMissingError(AvlocError, FileNotFoundError):
    """The Debian media packages are not where the builder looks; the message says what to run."""


# ---------------------------------------------------------------------------------------------------
# Media discovery and decoding (cached per process: every worker decodes each file at most once).


def media_root(media_dir=None):
    """The folder that contains `scratch/` (env KERAS_AVLOC_MEDIA, default ~/.cache/keras-avloc/media)."""
    if media_dir:
        return os.path.abspath(os.path.expanduser(media_dir))
    return os.path.abspath(os.path.expanduser(
        os.environ.get("KERAS_AVLOC_MEDIA", "~/.cache/keras-avloc/media")))


def check_media(stamps_dir=None, media_dir=None):
    """Raises `MediaMissingError` naming the command to run when a media package is missing.

    Returns:
        (stamps_dir, scratch_media_dir) as absolute paths.
    """
    stamps_dir = stamps_dir or catalog.STAMPS_DIR
    scratch = os.path.join(media_root(media_dir), catalog.SCRATCH_MEDIA)
    probe = os.path.join(stamps_dir, catalog.STAMPS[0][0] + ".png")
    if not os.path.isfile(probe):
        raise MediaMissingError(
            f"Tux Paint photo stamps not found ({probe} is missing). Install them with "
            "`sudo apt-get install tuxpaint-stamps-default` or run `bash tools/setup.sh`.")
    if not os.path.isdir(os.path.join(scratch, "Backgrounds")):
        raise MediaMissingError(
            f"scratch backgrounds not found in {scratch}. Run `bash tools/setup.sh` (it unpacks the "
            "`scratch` Debian package there without installing it), or set KERAS_AVLOC_MEDIA to the "
            "folder that contains scratch/.")
    return os.path.abspath(stamps_dir), scratch


def _count_colours(rgba):
    opaque = rgba[..., 3] > 127
    rgb = rgba[..., :3][opaque].astype(np.int64)
    if len(rgb) == 0:
        return 0
    return len(np.unique(rgb[:, 0] * 65536 + rgb[:, 1] * 256 + rgb[:, 2]))


def _first_line(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip()
    except OSError:
        return ""


def _translations(path):
    """{language: text} from a stamp's .txt (`xx.utf8=...` lines) for the description languages."""
    texts = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                language = key.split(".")[0]
                if sep and language in SEEN_LANGUAGES + UNSEEN_LANGUAGES and value.strip():
                    texts.setdefault(language, value.strip())
    except OSError:
        pass
    return texts


def _is_audible(path, min_peak=0.01):
    import soundfile

    try:
        data, _ = soundfile.read(path, dtype="float32")
    except Exception:  # noqa: BLE001 - unreadable counts as silent
        return False
    return bool(len(data)) and float(np.max(np.abs(data))) >= min_peak


def load_catalog(stamps_dir=None, media_dir=None):
    """Applies the stamp rule of `stamps_catalog` to the installed media.

    Stamps whose own recording is digital silence (giraffe, wombat, rhea in Debian's package) are
    kept as silent distractors only: their classes are in "distractor_classes", not in "classes".

    Returns:
        dict with "stamps" (list of {"stamp", "class", "sounding", "description", "desc_audio"}),
        "dropped" (list of {"stamp", "reason"}), "classes" (sorted names of sounding classes),
        "distractor_classes", "recordings" (list of
        {"id", "class", "unseen"}, see `assign_unseen_recordings`), "backgrounds" (sorted names),
        "ambience" (paths).
    """
    import cv2

    stamps_dir, scratch = check_media(stamps_dir, media_dir)
    stamps, dropped = [], []
    for stamp, class_name in catalog.STAMPS:
        base = os.path.join(stamps_dir, stamp)
        image = cv2.imread(base + ".png", cv2.IMREAD_UNCHANGED)
        reason = None
        if image is None or not os.path.isfile(base + ".ogg"):
            reason = "png or ogg missing"
        elif image.ndim != 3 or image.shape[2] != 4:
            reason = "no alpha channel"
        elif max(image.shape[:2]) < catalog.MIN_LONGEST_SIDE:
            reason = f"longest side {max(image.shape[:2])} < {catalog.MIN_LONGEST_SIDE} px"
        else:
            colours = _count_colours(image)
            if colours < catalog.MIN_DISTINCT_COLOURS:
                reason = f"{colours} colours < {catalog.MIN_DISTINCT_COLOURS} (clip-art)"
        if reason:
            dropped.append({"stamp": stamp, "reason": reason})
            continue
        desc = base + "_desc.ogg"
        stamps.append({
            "stamp": stamp, "class": class_name, "sounding": _is_audible(base + ".ogg"),
            "description": _first_line(base + ".txt") or f"A {class_name}.",
            "desc_audio": ("tuxpaint:" + stamp + "_desc.ogg") if os.path.isfile(desc) else None,
            "desc_languages": {lang: f"tuxpaint:{stamp}_desc_{lang}.ogg" for lang in SEEN_LANGUAGES + UNSEEN_LANGUAGES
                               if os.path.isfile(f"{base}_desc_{lang}.ogg")},
            "texts": _translations(base + ".txt"),
        })
    classes = sorted({entry["class"] for entry in stamps if entry["sounding"]})
    distractor_classes = sorted({entry["class"] for entry in stamps} - set(classes))
    recordings = [{"id": "tuxpaint:" + e["stamp"] + ".ogg", "class": e["class"]}
                  for e in stamps if e["sounding"] and e["stamp"] not in catalog.DUPLICATE_RECORDINGS]
    for rel, class_name in catalog.EXTRA_RECORDINGS:
        if class_name in classes and os.path.isfile(os.path.join(scratch, "Sounds", rel)):
            recordings.append({"id": "scratch:Sounds/" + rel, "class": class_name})
    recordings = assign_unseen_recordings(recordings)
    backgrounds = []
    for folder in sorted(os.listdir(os.path.join(scratch, "Backgrounds"))):
        path = os.path.join(scratch, "Backgrounds", folder)
        if not os.path.isdir(path):
            continue
        for name in sorted(os.listdir(path)):
            stem, ext = os.path.splitext(name)
            if ext.lower() == ".jpg" and stem not in catalog.BACKGROUND_EXCLUDE:
                backgrounds.append(f"{folder}/{name}")
    ambience = [r for r in catalog.AMBIENCE_RECORDINGS
                if os.path.isfile(os.path.join(scratch, "Sounds", r))]
    if len(classes) < 4 or len(backgrounds) < 3:
        raise MediaMissingError(
            f"only {len(classes)} stamp classes and {len(backgrounds)} backgrounds found under "
            f"{stamps_dir} and {scratch}; reinstall with `bash tools/setup.sh`.")
    return {"stamps": stamps, "dropped": dropped, "classes": classes,
            "distractor_classes": distractor_classes, "recordings": recordings,
            "backgrounds": backgrounds, "ambience": ambience,
            "stamps_dir": stamps_dir, "scratch": scratch}


def assign_unseen_recordings(recordings):
    """Marks the recordings of each class that training never hears (`"unseen": True`).

    A class with k >= 2 distinct recordings keeps max(1, k // 3) of them unseen, taken from the scratch
    package's recordings first (another source than the stamps', as a new recording would be), then the
    last in sorted order; a class with one recording has none unseen (and no val_unseen / test_unseen
    scenes).

    Returns:
        the recordings sorted by id, each with an "unseen" flag.
    """
    by_class = {}
    for recording in sorted(recordings, key=lambda r: r["id"]):
        by_class.setdefault(recording["class"], []).append(dict(recording, unseen=False))
    for items in by_class.values():
        if len(items) < 2:
            continue
        scratch = [r for r in items if r["id"].startswith("scratch:")][::-1]
        others = [r for r in items if not r["id"].startswith("scratch:")][::-1]
        for recording in (scratch + others)[: max(1, len(items) // 3)]:
            recording["unseen"] = True
    return sorted((r for items in by_class.values() for r in items), key=lambda r: r["id"])


def unseen_classes(info):
    """The sounding classes that have unseen recordings (the classes of val_unseen / test_unseen)."""
    return sorted({r["class"] for r in info["recordings"] if r["unseen"] and r["class"] in info["classes"]})


def _resolve(media_id, stamps_dir, scratch):
    source, rel = media_id.split(":", 1)
    return os.path.join(stamps_dir if source == "tuxpaint" else scratch, rel)


def decode_audio(path, sample_rate=SAMPLE_RATE):
    """Reads any ogg/wav/mp3 as float32 mono at `sample_rate` (`keras_avloc.io.media.read_audio`)."""
    return media_io.read_audio(path, sample_rate)


def _frame_rms(wave, frame):
    count = len(wave) // frame
    if count == 0:
        return np.zeros(0, np.float32)
    return np.sqrt(np.mean(wave[: count * frame].reshape(count, frame) ** 2, axis=1))


def trim_and_split(wave, sample_rate=SAMPLE_RATE, min_split_seconds=MIN_SPLIT_SECONDS):
    """Trims silence (-40 dB of the peak) and finds the train/held-out cut.

    Returns:
        (trimmed_wave, cut): train crops use `trimmed[:cut]`, held-out crops `trimmed[cut:]`;
        `cut` is None when the recording is too short to split (it is then used whole).
    """
    peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
    if peak <= 0:
        return wave, None
    loud = np.nonzero(np.abs(wave) > peak * 0.01)[0]
    wave = wave[loud[0]: loud[-1] + 1]
    if len(wave) < min_split_seconds * sample_rate:
        return wave, None
    frame = sample_rate // 50
    rms = _frame_rms(wave, frame)
    lo, hi = int(len(rms) * 0.5), max(int(len(rms) * 0.75), int(len(rms) * 0.5) + 1)
    quietest = lo + int(np.argmin(rms[lo:hi]))
    return wave, quietest * frame + frame // 2


class MediaCache:
    """Per-process cache of decoded stamps, backgrounds and recordings."""

    def __init__(self, stamps_dir, scratch):
        self.stamps_dir, self.scratch = stamps_dir, scratch
        self._stamps, self._backgrounds, self._recordings, self._speech = {}, {}, {}, {}
        self.files = {}  # other backgrounds by absolute path (`stamps_variety.file_background`)

    def stamp(self, stamp):
        """Premultiplied float32 RGBA [H, W, 4] in [0, 1], tight-cropped to its alpha."""
        if stamp not in self._stamps:
            import cv2

            bgra = cv2.imread(os.path.join(self.stamps_dir, stamp + ".png"), cv2.IMREAD_UNCHANGED)
            rgba = bgra[..., [2, 1, 0, 3]].astype(np.float32) / 255.0
            ys, xs = np.nonzero(rgba[..., 3] > 0.5)
            rgba = rgba[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
            rgba[..., :3] *= rgba[..., 3:4]
            self._stamps[stamp] = np.ascontiguousarray(rgba)
        return self._stamps[stamp]

    def background(self, name):
        if name not in self._backgrounds:
            import cv2

            bgr = cv2.imread(os.path.join(self.scratch, "Backgrounds", name), cv2.IMREAD_COLOR)
            self._backgrounds[name] = bgr[..., ::-1].astype(np.float32) / 255.0
        return self._backgrounds[name]

    def recording(self, media_id):
        """(trimmed 16 kHz wave, cut) of a recording id like "tuxpaint:animals/birds/owl.ogg"."""
        if media_id not in self._recordings:
            wave = decode_audio(_resolve(media_id, self.stamps_dir, self.scratch))
            self._recordings[media_id] = trim_and_split(wave)
        return self._recordings[media_id]

    def ambience(self, rel):
        key = "scratch:Sounds/" + rel
        if key not in self._recordings:
            self._recordings[key] = (decode_audio(_resolve(key, self.stamps_dir, self.scratch)), None)
        return self._recordings[key][0]

    def speech(self, text, voice=None, rate=None):
        """espeak-ng TTS of `text` at 16 kHz (deterministic for a given espeak-ng); default voice and rate unless
        given."""
        key = (text, voice, rate) if voice or rate else text
        if key not in self._speech:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "prompt.wav")
                options = (["-v", voice] if voice else []) + (["-s", str(int(rate))] if rate else [])
                try:
                    subprocess.run(["espeak-ng", *options, "-w", path, text], check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                except (OSError, subprocess.CalledProcessError) as err:
                    raise MediaMissingError(
                        "espeak-ng is needed for spoken prompts of stamps without a recorded "
                        "description: `sudo apt-get install espeak-ng` or `bash tools/setup.sh`."
                    ) from err
                self._speech[key] = decode_audio(path)
        return self._speech[key]


# ---------------------------------------------------------------------------------------------------
# Scene planning: everything random is drawn from one generator seeded by (seed, split, index).


def _scene_rng(seed, split, index, stream=0):
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index), stream])


def split_backgrounds(backgrounds, seed):
    """Disjoint background lists {"train", "val", "test"} (a seeded shuffle of the sorted names)."""
    order = list(np.random.default_rng([int(seed), 7]).permutation(len(backgrounds)))
    names = [backgrounds[i] for i in order]
    n_test = max(1, int(round(len(names) * SPLIT_FRACTIONS["test"])))
    n_val = max(1, int(round(len(names) * SPLIT_FRACTIONS["val"])))
    return {"test": sorted(names[:n_test]), "val": sorted(names[n_test: n_test + n_val]),
            "train": sorted(names[n_test + n_val:])}


def balanced_class(classes, seed, split, index):
    """Class of scene `index`: each block of len(classes) scenes holds every class once."""
    block, position = divmod(int(index), len(classes))
    order = _scene_rng(seed, split, block, stream=1).permutation(len(classes))
    return classes[int(order[position])]


def _scene_kind(split, index):
    if split == "test_ext":
        return ("single", "single", "silent", "offscreen")[index % 4]
    if split.endswith("_mix"):
        return "mixture"
    if "speech" in split:
        return "speech"
    if split.endswith("_mosaic"):
        return "mosaic"
    if split.endswith("_duet"):
        return "duet"
    if split.endswith("_interf"):
        return "interference"
    return "single"


def interference_plan(index, rng):
    """(scenario, level_db of the second on-screen source or None, on-screen sounding count, off-screen count,
    silent count) of interference scene `index` (see INTERFERENCE_SCENARIOS)."""
    scenario = INTERFERENCE_SCENARIOS[int(index) % len(INTERFERENCE_SCENARIOS)]
    sign = 1.0 if (int(index) // len(INTERFERENCE_SCENARIOS)) % 2 == 0 else -1.0
    if scenario.startswith("volume_"):
        return scenario, sign * float(scenario[len("volume_"):-2]) + 0.0, 2, 0, 0  # + 0.0: no "-0.0"
    if scenario == "offscreen":
        return scenario, None, 1, 1, 0
    if scenario == "silent":
        return scenario, None, 1, 0, int(rng.integers(1, 3))
    return scenario, sign * float((0, 6, 12, 20)[int(rng.integers(0, 4))]) + 0.0, 2, 1, 1


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


# ---------------------------------------------------------------------------------------------------
# Rendering one scene (runs in worker processes).

_WORKER = {}


def _init_worker(catalog_info, options):
    _WORKER["catalog"] = catalog_info
    _WORKER["options"] = options
    _WORKER["media"] = MediaCache(catalog_info["stamps_dir"], catalog_info["scratch"])


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


def render_scene(task):
    """Builds and writes one scene; returns its annotation record (a pure function of the task)."""
    split, index = task
    info, options, media = _WORKER["catalog"], _WORKER["options"], _WORKER["media"]
    root, size, seed = options["root"], options["size"], options["seed"]
    classes = info["classes"]
    rng = _scene_rng(seed, split, index)
    kind = _scene_kind(split, index)
    part = SPLIT_AUDIO_PART[split]
    file_id = f"{split}_{index:05d}"
    length = int(round(CLIP_SECONDS * SAMPLE_RATE))
    background_name = _pick(options["backgrounds"][SPLIT_BACKGROUNDS[split]], rng)
    settings = stamps_variety.recipe(split, options.get("variety", "narrow"))
    narrow = settings is stamps_variety.VARIETY["narrow"]
    # A mosaic renders one background per cell below; the others one for the frame (same draws as before).
    background_kind = "photo" if narrow or kind == "mosaic" else stamps_variety.draw_kind(rng,
                                                                                         settings["backgrounds"])
    if kind == "mosaic":
        background = None
    elif background_kind == "photo":
        background = _render_background(media, background_name, size, rng)
    elif background_kind == "ood":
        path = _pick(options["ood_backgrounds"][SPLIT_BACKGROUNDS[split]], rng)
        background_name = "/".join(path.split(os.sep)[-2:])
        background = stamps_variety.file_background(path, size, rng, media.files)
    else:
        background_name = background_kind
        render = stamps_variety.texture_background if background_kind == "texture" else stamps_variety.plain_background
        background = render(size, rng)

    main_class = balanced_class(unseen_classes(info) if part == "unseen" else classes, seed, split, index)
    pictured_pool = classes + info["distractor_classes"]  # silent distractors may be any photo stamp
    plan = None
    if kind == "interference":
        plan = interference_plan(index, rng)
        _, _, n_sounding, n_offscreen, n_silent = plan
        sounding = [main_class] + _other_classes(classes, [main_class], n_sounding - 1, rng)
        visible = sounding + _other_classes(classes, sounding, n_silent, rng)
        offscreen_classes = _other_classes(classes, visible, n_offscreen, rng)
    elif kind == "mixture":
        sounding = [main_class] + _other_classes(classes, [main_class], 1, rng)
        visible = sounding + _other_classes(pictured_pool, sounding, int(rng.integers(0, 2)), rng)
    elif kind == "silent":
        sounding = []
        visible = _other_classes(pictured_pool, [main_class], int(rng.integers(1, 4)), rng)
    elif kind in MULTI_OBJECT_KINDS:
        # Silent objects of sounding classes: classes the model hears elsewhere, visible here without sound.
        sounding = [main_class] + _other_classes(classes, [main_class], 1, rng)
        n_silent = 2 if kind == "mosaic" else int(rng.integers(1, 3))
        visible = sounding + _other_classes(classes, sounding, n_silent, rng)
    elif kind == "speech":
        sounding = [main_class]
        visible = sounding + _other_classes(pictured_pool, sounding, int(rng.integers(1, 4)), rng)
    else:
        sounding = [main_class]
        low, high = settings["distractors"]
        count = int(rng.integers(low, high + 1))
        if settings.get("sounding_distractors"):
            # Silent objects of classes that sound in other scenes: only the audio tells them from the source.
            heard = sum(rng.random() < settings["sounding_distractors"] for _ in range(count))
            chosen = _other_classes(classes, sounding, min(heard, len(classes) - 1), rng)
            visible = sounding + chosen + _other_classes(pictured_pool, sounding + chosen, count - len(chosen), rng)
        else:
            visible = sounding + _other_classes(pictured_pool, sounding, count, rng)
    stamps = {c: _pick([s for s in _stamps_of(info, c) if s["sounding"] or c not in sounding], rng)
              for c in visible}
    draw_order = [visible[int(i)] for i in rng.permutation(len(visible))]
    if kind == "mosaic":
        image, masks = _compose_mosaic(media, [background_name] + [
            _pick(options["backgrounds"][SPLIT_BACKGROUNDS[split]], rng) for _ in range(3)],
            [stamps[c]["stamp"] for c in draw_order], [c in sounding for c in draw_order], size, rng)
    else:
        image, masks = _compose(media, background, [stamps[c]["stamp"] for c in draw_order], size, rng,
                                sounding=[c in sounding for c in draw_order], settings=settings)
    mask_of = dict(zip(draw_order, masks))

    # Audio: one peak-normalised clip per sounding source, summed at +-5 dB for two sources.
    audio_classes = list(sounding)
    if kind == "silent":
        audio_classes = [main_class]
    elif kind == "offscreen":
        audio_classes = audio_classes + _other_classes(classes, visible, 1, rng)
    elif kind == "interference":
        audio_classes = audio_classes + offscreen_classes
    provenance, clips = [], []
    if kind == "speech":
        wave, prompt, prompt_source, language = _spoken_prompt(media, stamps[main_class], main_class,
                                                               SPLIT_LANGUAGES[split], rng)
        wave = wave[: length]
        start = int(rng.integers(0, length - len(wave) + 1))
        clip = np.zeros(length, np.float32)
        clip[start: start + len(wave)] = wave / max(float(np.max(np.abs(wave))), 1e-9)
        clips.append(clip)
        provenance.append({"recording": prompt_source, "prompt": prompt, "offset": start, "language": language,
                           "samples": len(wave)})
    else:
        for class_name in audio_classes:
            recording = _choose_recording(info, class_name, part, rng)
            clip, meta = _recording_clip(media, recording, part, length, rng)
            if settings["partial_silence"] and rng.random() < settings["partial_silence"]:
                clip = stamps_variety.partly_silent(clip, rng, SAMPLE_RATE)
                meta["partly_silent"] = True
            clips.append(clip)
            provenance.append(meta)
    if kind == "interference":
        # The second on-screen source at the scenario's level, an off-screen one at 0 dB, relative to the first.
        levels = ([plan[1]] if plan[2] == 2 else []) + [0.0] * plan[3]
        for number, level_db in enumerate(levels, start=1):
            clips[number] = clips[number] * (_rms(clips[0]) / _rms(clips[number])) * 10 ** (level_db / 20.0)
            provenance[number]["level_db"] = round(level_db, 3)
    elif len(clips) == 2:
        level_db = float(rng.uniform(-5.0, 5.0))
        clips[1] = clips[1] * (_rms(clips[0]) / _rms(clips[1])) * 10 ** (level_db / 20.0)
        provenance[1]["level_db"] = round(level_db, 3)
    mix = np.sum(clips, axis=0)
    ambience = None
    if options["ambience"] and info["ambience"]:
        rel = _pick(info["ambience"], rng)
        noise, _ = _clip_from(media.ambience(rel), length, rng)
        snr_db = float(rng.uniform(10.0, 20.0))
        mix = mix + noise * (_rms(mix) / _rms(noise)) * 10 ** (-snr_db / 20.0)
        ambience = {"recording": "scratch:Sounds/" + rel, "snr_db": round(snr_db, 3)}
    elif settings["ambience"] and info["ambience"] and rng.random() < settings["ambience"]:
        rel = _pick(info["ambience"], rng)
        noise, _ = _clip_from(media.ambience(rel), length, rng)
        snr_db = float(rng.uniform(*settings["ambience_snr_db"]))
        mix = mix + noise * (_rms(mix) / _rms(noise)) * 10 ** (-snr_db / 20.0)
        ambience = {"recording": "scratch:Sounds/" + rel, "snr_db": round(snr_db, 3)}
    gain, level_dbfs = stamps_variety.level_gain(mix, rng, settings, PEAK_LEVEL)

    for folder in ("frames", "audio", "masks"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    _write_jpg(os.path.join(root, "frames", file_id + ".jpg"), image, quality=settings.get("jpeg_quality", 95))
    _write_wav(os.path.join(root, "audio", file_id + ".wav"), mix * gain)

    record = {"file": file_id, "class": main_class, "bbox": []}
    if kind == "silent":
        pass
    elif kind in ("mixture", "offscreen") + MULTI_OBJECT_KINDS:
        sources = []
        for number, (class_name, clip) in enumerate(zip(audio_classes, clips)):
            source_id = f"{file_id}_s{number}"
            _write_wav(os.path.join(root, "audio", source_id + ".wav"), clip * gain)
            source = {"class": class_name, "bbox": [], "audio": f"audio/{source_id}.wav"}
            if class_name in mask_of:
                media_io.write_png(os.path.join(root, "masks", source_id + ".png"), mask_of[class_name])
                source["bbox"] = [mask_box(mask_of[class_name])]
                source["mask"] = f"masks/{source_id}.png"
            else:
                source["offscreen"] = True
            sources.append(source)
        on_screen = [mask_of[c] for c in sounding]
        record["bbox"] = [mask_box(m) for m in on_screen]
        media_io.write_png(os.path.join(root, "masks", file_id + ".png"), np.any(on_screen, axis=0))
        record["mask"] = f"masks/{file_id}.png"
        record["sources"] = sources
        if kind in MULTI_OBJECT_KINDS:
            source_mask = {source["class"]: source["mask"] for source in sources if "mask" in source}
            objects = []
            for number, class_name in enumerate(draw_order):
                if class_name in source_mask:
                    mask_path = source_mask[class_name]
                else:
                    mask_path = f"masks/{file_id}_o{number}.png"
                    media_io.write_png(os.path.join(root, mask_path), mask_of[class_name])
                objects.append({"class": class_name, "bbox": [mask_box(mask_of[class_name])], "mask": mask_path,
                                "sounding": class_name in sounding})
            record["objects"] = objects
    else:
        media_io.write_png(os.path.join(root, "masks", file_id + ".png"), mask_of[main_class])
        record["bbox"] = [mask_box(mask_of[main_class])]
        record["mask"] = f"masks/{file_id}.png"
    record["kind"] = kind
    if kind == "interference":
        record["scenario"] = plan[0]
        record["interference"] = {"level_db": plan[1], "offscreen": list(offscreen_classes),
                                  "silent": [c for c in visible if c not in sounding]}
    if kind == "speech":
        record["prompt"] = provenance[0]["prompt"]
        record["language"] = provenance[0]["language"]
        start = provenance[0]["offset"]
        record["speech"] = [round(start / SAMPLE_RATE, 4), round((start + provenance[0]["samples"]) / SAMPLE_RATE, 4)]
    record["scene"] = {
        "background": background_name,
        "objects": [{"class": c, "stamp": stamps[c]["stamp"], "sounding": c in sounding}
                    for c in draw_order],
        "audio": provenance,
        "ambience": ambience,
    }
    if not narrow:
        record["scene"].update(background_kind=background_kind, level_dbfs=level_dbfs,
                               recipe="second" if split.endswith("_ood") else options["variety"])
    part_path = os.path.join(root, ".parts", split, file_id + ".json")
    files.write_bytes(part_path, json.dumps(record, sort_keys=False).encode())
    return record


# ---------------------------------------------------------------------------------------------------
# The build driver.


def _write_json(path, value):
    files.write_json(path, value, indent=1)


def _remove_stale_temp_files(out, splits):
    """Deletes the temporaries an interrupted build left (their writers are gone)."""
    folders = [os.path.join(out, f) for f in ("frames", "audio", "masks", ".parts", "")]
    folders += [os.path.join(out, ".parts", split) for split in splits]
    for folder in folders:
        files.remove_stale_temp_files(folder)


def finished_scenes(out, counts, id_format="{split}_{index:05d}"):
    """The records of the scenes already built in `out/.parts/<split>/` and the (split, index) tasks still to do.

    Returns:
        ({split: [record or None] * count}, [(split, index), ...]).
    """
    records = {split: [None] * count for split, count in counts.items()}
    todo = []
    for split, count in counts.items():
        for index in range(count):
            part = os.path.join(out, ".parts", split, id_format.format(split=split, index=index) + ".json")
            try:
                with open(part, encoding="utf-8") as handle:
                    records[split][index] = json.load(handle)
            except (OSError, ValueError):
                todo.append((split, index))
    return records, todo


def restrict_classes(info, classes):
    """The catalog `info` with only `classes` sounding (the other classes become distractor classes)."""
    if classes is None:
        return info
    wanted = sorted({str(name).strip() for name in classes if str(name).strip()})
    unknown = [name for name in wanted if name not in info["classes"]]
    if unknown or len(wanted) < 2:
        raise StampsError(
            f"stamps classes: {unknown or wanted} {'are not sounding classes' if unknown else 'is fewer than 2 classes'}; "
            f"choose at least 2 of: {', '.join(info['classes'])}.")
    others = set(info["classes"]) - set(wanted)
    return dict(info, classes=wanted,
                distractor_classes=sorted(set(info["distractor_classes"]) | others),
                recordings=[r for r in info["recordings"] if r["class"] in wanted])


def _params_fingerprint(options, info):
    key = {"version": BUILDER_VERSION, "size": options["size"], "seed": options["seed"],
           "ambience": options["ambience"], "classes": info["classes"],
           "stamps": [s["stamp"] for s in info["stamps"]], "backgrounds": info["backgrounds"]}
    if options["variety"] != "narrow":  # builds of the first recipe keep their fingerprint
        key["variety"] = options["variety"]
    return key, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build_stamps(out, n_train=2000, n_val=200, n_test=500, n_test_mix=200, n_train_mix=0,
                 n_test_ext=200, n_speech=0, size=224, seed=0, workers=1, ambience=False,
                 overwrite=False, stamps_dir=None, media_dir=None, progress=True, classes=None, n_val_unseen=0,
                 n_test_unseen=0, n_train_mosaic=0, n_val_mosaic=0, n_test_mosaic=0, n_test_duet=0, n_train_speech=0,
                 n_val_speech=0, n_test_speech_unseen=0, n_val_interf=0, n_test_interf=0, variety="narrow",
                 n_val_ood=0, n_test_ood=0):
    """Builds (or resumes) the stamps benchmark in `out`.

    Args:
        out: output root; gets frames/, audio/, masks/, <split>.json, classes.json, summary.json.
        n_train, n_val, n_test: single-source scenes per split.
        n_test_mix, n_train_mix: two-source mixture scenes (`test_mix.json`, `train_mix.json`).
        n_test_ext: extended-protocol scenes (`test_ext.json`: half single, a quarter "silent",
            a quarter "offscreen").
        n_speech: spoken-prompt scenes (`test_speech.json`); 0 skips the split.
        size: square frame side in pixels.
        seed: everything random derives from (seed, split, scene index).
        workers: processes rendering scenes in parallel (the output does not depend on it).
        ambience: add a real ambience recording at 10-20 dB SNR to every clip.
        overwrite: rebuild `out` when it was built with another seed/size/media.
        stamps_dir, media_dir: override the Tux Paint stamps folder and the folder holding scratch/.
        progress: show a tqdm progress bar.
        classes: optional subset of the sounding classes (names as in `classes.json`); only these
            sound, every other photo stamp may still appear as a silent distractor. None = all.
        n_val_unseen, n_test_unseen: scenes of `val_unseen.json` / `test_unseen.json`: val / test
            backgrounds, and recordings training never hears (only classes that have some, see
            `assign_unseen_recordings`; 0 skips the split).
        n_train_mosaic, n_val_mosaic, n_test_mosaic: CSOL's 2 x 2 mosaics (two of four objects sound); they
            need at least 4 sounding classes.
        n_test_duet: CSOL's realistic duets (two sounding objects, 1-2 silent ones; at least 4 classes).
        n_train_speech, n_val_speech, n_test_speech_unseen: spoken-prompt scenes for training, validation and
            the unseen-language test (DenseAV; see the module docstring).
        n_val_interf, n_test_interf: IEr's interference scenes (`INTERFERENCE_SCENARIOS`; at least 4 classes).
        variety: "narrow" (the first recipe) or "wide" (domain-randomised train / val / test / *_unseen scenes:
            `keras_avloc.data.stamps_variety.VARIETY`).
        n_val_ood, n_test_ood: scenes of the second recipe (`stamps_variety.OOD_RECIPE`): other backgrounds,
            compositing and levels, and only recordings training never hears (needs the Debian packages
            `mate-backgrounds` and `mypaint-data-extras`).

    Returns:
        The summary dict (also written to `out/summary.json` without the timing fields):
        "classes", "splits" {split: {"scenes", "class_counts"}}, "backgrounds" {train/val/test},
        "stamps" (selected count), "dropped_stamps", "recordings", plus "built", "skipped",
        "seconds" and "scenes_per_second".

    Example:
        >>> summary = build_stamps("/tmp/stamps", n_train=6, n_val=2, n_test=4, n_test_mix=2,
        ...                        n_test_ext=4, size=64)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    started = time.time()
    info = restrict_classes(load_catalog(stamps_dir, media_dir), classes)
    out = os.path.abspath(os.path.expanduser(out))
    variety_name = str(variety)
    stamps_variety.recipe("train", variety_name)  # refuses an unknown name
    options = {"root": out, "size": int(size), "seed": int(seed), "ambience": bool(ambience),
               "backgrounds": split_backgrounds(info["backgrounds"], seed), "variety": variety_name}
    if n_val_ood or n_test_ood:
        found = stamps_variety.ood_backgrounds()
        if len(found) < 3:
            raise MediaMissingError(
                f"val_ood / test_ood need the backgrounds of the Debian packages {stamps_variety.OOD_PACKAGES} "
                f"(found {len(found)} images under {', '.join(stamps_variety.OOD_BACKGROUND_DIRS)}); install them "
                f"with `sudo apt-get install {stamps_variety.OOD_PACKAGES}` or `bash tools/setup.sh`, or pass 0 "
                "ood scenes.")
        if not unseen_classes(info):
            raise StampsError("val_ood / test_ood use recordings training never hears, and none of the classes "
                              f"{', '.join(info['classes'])} has one; choose classes with several recordings.")
        options["ood_backgrounds"] = stamps_variety.split_ood_backgrounds(found, seed)
    key, fingerprint = _params_fingerprint(options, info)
    params_path = os.path.join(out, ".parts", "params.json")
    if os.path.isfile(params_path):
        with open(params_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous.get("fingerprint") != fingerprint:
            if not overwrite:
                raise OtherBuildError(
                    f"{out} holds a stamps build with other settings ({params_path}); choose a new "
                    "--out folder or pass --overwrite to rebuild it.")
            shutil.rmtree(os.path.join(out, ".parts"))
    counts = {"train": n_train, "val": n_val, "test": n_test, "train_mix": n_train_mix,
              "test_mix": n_test_mix, "test_ext": n_test_ext, "test_speech": n_speech,
              "val_unseen": n_val_unseen, "test_unseen": n_test_unseen, "train_mosaic": n_train_mosaic,
              "val_mosaic": n_val_mosaic, "test_mosaic": n_test_mosaic, "test_duet": n_test_duet,
              "train_speech": n_train_speech, "val_speech": n_val_speech, "test_speech_unseen": n_test_speech_unseen,
              "val_interf": n_val_interf, "test_interf": n_test_interf, "val_ood": n_val_ood, "test_ood": n_test_ood}
    if (n_train_mosaic or n_val_mosaic or n_test_mosaic or n_test_duet or n_val_interf or n_test_interf) \
            and len(info["classes"]) < 4:
        raise StampsError(f"mosaic, duet and interference scenes show up to four objects of distinct sounding "
                          f"classes, and only {len(info['classes'])} classes sound ({', '.join(info['classes'])}); "
                          "choose at least 4 with --classes, or pass 0 mosaic / duet / interference scenes.")
    if (n_val_unseen or n_test_unseen) and not unseen_classes(info):
        raise StampsError(f"none of the classes {', '.join(info['classes'])} has a second recording, so "
                          "val_unseen / test_unseen cannot be built; choose classes with several recordings "
                          f"(e.g. {', '.join(unseen_classes(restrict_classes(load_catalog(stamps_dir, media_dir), None))[:8])}) "
                          "or pass --n-val-unseen 0 --n-test-unseen 0.")
    splits = [s for s in SPLIT_ORDER if counts[s] > 0]
    for split in splits:
        os.makedirs(os.path.join(out, ".parts", split), exist_ok=True)
    _write_json(params_path, {"fingerprint": fingerprint, "settings": key})
    _remove_stale_temp_files(out, splits)

    records, todo = finished_scenes(out, {split: counts[split] for split in splits})
    skipped = sum(counts[s] for s in splits) - len(todo)

    bar = tqdm(total=len(todo), desc="stamps scenes", unit="scene", disable=not progress)
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(info, options)) as pool:
            for task, record in zip(todo, pool.imap(render_scene, todo, chunksize=4)):
                records[task[0]][task[1]] = record
                bar.update()
    else:
        _init_worker(info, options)
        for task in todo:
            records[task[0]][task[1]] = render_scene(task)
            bar.update()
    bar.close()

    split_summary = {}
    for split in splits:
        _write_json(os.path.join(out, f"{split}.json"), records[split])
        class_counts = {}
        for record in records[split]:
            if record["kind"] in ("mixture",) + MULTI_OBJECT_KINDS:
                names = [s["class"] for s in record["sources"]]
            elif record["kind"] == "silent":
                names = []
            else:
                names = [record["class"]]
            for name in names:
                class_counts[name] = class_counts.get(name, 0) + 1
        split_summary[split] = {"scenes": len(records[split]),
                                "class_counts": dict(sorted(class_counts.items()))}
    summary = {
        "classes": info["classes"],
        "distractor_classes": info["distractor_classes"],
        "splits": split_summary,
        "backgrounds": options["backgrounds"],
        "stamps": len(info["stamps"]),
        "dropped_stamps": info["dropped"],
        "recordings": len(info["recordings"]),
        "unseen_recordings": sorted(r["id"] for r in info["recordings"] if r["unseen"]),
        "size": int(size), "seed": int(seed), "ambience": bool(ambience), "variety": variety_name,
    }
    _write_json(os.path.join(out, "classes.json"), info["classes"])
    _write_json(os.path.join(out, "summary.json"), summary)
    seconds = time.time() - started
    summary = dict(summary, built=len(todo), skipped=skipped, seconds=round(seconds, 2),
                   scenes_per_second=round(len(todo) / max(seconds, 1e-9), 2))
    return summary


def format_summary(summary):
    """Human-readable table of the per-split class counts."""
    lines = [f"{len(summary['classes'])} classes from {summary['stamps']} photo stamps, "
             f"{summary['recordings']} recordings; backgrounds train/val/test = "
             + "/".join(str(len(summary["backgrounds"][s])) for s in ("train", "val", "test"))]
    splits = list(summary["splits"])
    widths = {split: max(12, len(split) + 2) for split in splits}
    lines.append(f"{'class':<14}" + "".join(f"{s:>{widths[s]}}" for s in splits))
    for name in summary["classes"]:
        lines.append(f"{name:<14}" + "".join(
            f"{summary['splits'][s]['class_counts'].get(name, 0):>{widths[s]}}" for s in splits))
    lines.append(f"{'scenes':<14}" + "".join(f"{summary['splits'][s]['scenes']:>{widths[s]}}" for s in splits))
    if "built" in summary:
        lines.append(f"built {summary['built']} scenes, skipped {summary['skipped']} already done, "
                     f"{summary['seconds']} s ({summary['scenes_per_second']} scenes/s)")
    return "\n".join(lines)
