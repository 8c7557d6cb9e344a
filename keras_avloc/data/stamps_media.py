"""Media of the stamps benchmark: where the Debian packages are, which stamps and recordings qualify, decoding.

`load_catalog` applies the stamp rule of `keras_avloc.data.stamps_catalog` to the installed `tuxpaint-stamps-default`
and `scratch` media; `MediaCache` decodes each stamp, background and recording at most once per process;
`trim_and_split` cuts a recording into its training and held-out parts. `keras_avloc.data.stamps` builds the scenes.
"""

import os
import subprocess

import numpy as np

from keras_avloc.data import stamps_catalog as catalog
from keras_avloc.io import media as media_io
from keras_avloc.io.errors import AvlocError

SAMPLE_RATE = 16000
MIN_SPLIT_SECONDS = 1.0
SEEN_LANGUAGES = ("be", "bg", "ca", "el", "es", "fr", "ru")
"""Languages of the real spoken descriptions in train_speech / val_speech (with espeak-ng English)."""
UNSEEN_LANGUAGES = ("da", "nl", "ro")
"""Languages only test_speech_unseen speaks (real recordings in Tux Paint)."""


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
