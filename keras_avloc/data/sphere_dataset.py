"""tf.data pipelines over the viewpoints of 360° clips (AVC / AVSA), from the standard dataset layout.

A clip is `video/<id>.mp4` (equirectangular frames at 16 fps) and `audio/<id>.wav` (or any file with a
4-channel ambiX track: W, Y, Z, X at 24 kHz), listed in `<split>.json` (`avloc data sphere` writes them; real
YouTube-360 clips extracted by the downloader have the same layout). Each example is one clip seen from
`viewpoints` viewpoints, sampled as the official `datasets/preprocessing.py`:

* frames: `frames` consecutive frames (8 = 0.5 s at 16 fps); a random start in training, the middle ones in
  evaluation; audio: the whole 1 s.
* viewpoints: `keras_avloc.data.viewpoints.sample_viewpoints` (centres in the latitude band, 0.2 apart, random
  FOV and aspect); each gives perspective crops (`crop_size`, ImageNet-normalised) and the ambiX field rotated
  so that the viewpoint is the front (the official `audio_input: ambix`), as log-mels
  (`keras_avloc.data.audio.avsa_logmel`: [101, 128, 4] for 1 s; with `audio_input="ambix_intensity"` also the
  three mel-band intensity channels, [101, 128, 7]).
* training augmentation, per crop: horizontal flip with p = 0.5, *mirroring the sound field too* (Y -> -Y; the
  official code flips the video only, so a flipped crop's sound came from the other side), colour jitter
  (brightness, contrast, saturation 0.4, hue 0.2, one draw per crop for all its frames), audio gain x U[0.9, 1.1].
* `misalign` (AVSA-Bin): with this probability the whole field is first turned by a random yaw U[-pi, pi)
  (the official `rotate_mode: yaw`), and y["rotated"] says so.

Batches are (x, y): x = {"image": float32 [B, V, F, S, S, 3], "audio": float32 [B, V, 101, 128, 4]} and
y = {"rotated": float32 [B], "centres": float32 [B, V, 2] (panorama x, y), "index": int64 [B] (record)}.
The log-mels are not normalised here: AVC / AVSA normalise them per mel band with the training statistics they
hold (`mel_statistics`).
"""

import math
import os

import numpy as np

from keras_avloc.data.annotations import load_split
from keras_avloc.data.viewpoints import CROP_METHODS, CROP_SIZE, sample_viewpoints
from keras_avloc.io import imagenet
from keras_avloc.io.errors import AvlocError
from keras_avloc.io.media import MediaError, read_frames, read_multichannel_audio
from keras_avloc.spatial.ambisonics import rotate_foa
from keras_avloc.spatial.geometry import direction_to_equirect, equirect_to_direction, perspective_crops

SAMPLE_RATE = 24000
AUDIO_SECONDS = 1.0
VIDEO_FPS = 16
FRAMES = 8
JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}
GAIN_LIMITS = (0.9, 1.1)


class SphereDataError(AvlocError, ValueError):
    """A 360° split that cannot be read (the message names the file and the fix)."""


def clip_paths(root, record):
    """(video path, audio path) of a record: `video/<id>.mp4` and `audio/<id>.wav` (else the video's own track)."""
    video = os.path.join(root, "video", record["file"] + ".mp4")
    audio = os.path.join(root, "audio", record["file"] + ".wav")
    return video, audio if os.path.isfile(audio) else video


def load_clip(root, record):
    """The equirectangular frames (uint8 [N, H, W, 3] at 16 fps) and the ambiX field (float32 [4, T] at 24 kHz,
    exactly 1 s: cut or zero-padded) of a record."""
    video_path, audio_path = clip_paths(root, record)
    frames, _ = read_frames(video_path, fps=VIDEO_FPS)
    foa = read_multichannel_audio(audio_path, SAMPLE_RATE, 4)
    length = int(SAMPLE_RATE * AUDIO_SECONDS)
    if foa.shape[1] < length:
        foa = np.pad(foa, ((0, 0), (0, length - foa.shape[1])))
    return frames, foa[:, :length]


def mirror_foa(foa):
    """The left-right mirror image of an ambiX field (Y -> -Y): what a horizontally flipped view hears."""
    mirrored = np.array(foa, np.float64, copy=True)
    mirrored[1] *= -1.0
    return mirrored


def color_jitter(crops, rng, strength=JITTER):
    """torchvision-style colour jitter of a crop's frames [F, S, S, 3] in [0, 1], one draw for all frames:
    brightness, contrast, saturation (factors U[1 - s, 1 + s]) and hue (shift U[-h, h] of the colour wheel)."""
    import cv2

    out = crops * rng.uniform(1 - strength["brightness"], 1 + strength["brightness"])
    gray = out @ np.array([0.299, 0.587, 0.114], np.float32)
    out = (out - gray.mean()) * rng.uniform(1 - strength["contrast"], 1 + strength["contrast"]) + gray.mean()
    gray = (out @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    out = np.clip((out - gray) * rng.uniform(1 - strength["saturation"], 1 + strength["saturation"]) + gray, 0, 1)
    shift = rng.uniform(-strength["hue"], strength["hue"]) * 360.0
    if shift:
        hsv = np.stack([cv2.cvtColor(frame.astype(np.float32), cv2.COLOR_RGB2HSV) for frame in out])
        hsv[..., 0] = np.mod(hsv[..., 0] + shift, 360.0)
        out = np.stack([cv2.cvtColor(frame, cv2.COLOR_HSV2RGB) for frame in hsv])
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def clip_viewpoints(frames, foa, rng, viewpoints=4, frames_per_clip=FRAMES, crop_size=CROP_SIZE[0], training=False,
                    augment=True, misalign=0.0, crop_method="random", objects=()):
    """One example: the crops and rotated fields of `viewpoints` viewpoints of a clip (see the module docstring).
    With `crop_method="ambi_pow"` the centres follow the power map of the field as heard (after any misalignment);
    with "objects" they look at the clip's objects: `objects` holds each object's (azimuth, elevation) per frame, as
    the sphere records' "direction" (None or empty: not seen), and the centre is its direction at the middle of the
    frames used.

    Returns:
        dict: "video" float32 [V, F, S, S, 3] (ImageNet-normalised), "audio" float32 [V, 4, T] (rotated ambiX),
        "centres" float32 [V, 2], "rotated" float32 scalar (1 when the field was turned, `misalign`).
    """
    count = len(frames)
    if count < frames_per_clip:
        frames = np.concatenate([frames, np.repeat(frames[-1:], frames_per_clip - count, axis=0)])
        count = frames_per_clip
    start = int(rng.integers(0, count - frames_per_clip + 1)) if training else (count - frames_per_clip) // 2
    window = frames[start:start + frames_per_clip]
    height, width = window.shape[1:3]
    if crop_method == "random":  # drawn first, as before the option existed (the same viewpoints for a seed)
        centres, fovs = sample_viewpoints(rng, viewpoints, panorama_aspect=width / height)
    rotated = bool(misalign) and rng.random() < float(misalign)
    if rotated:
        foa = rotate_foa(foa, rng.uniform(-math.pi, math.pi), 0.0)
    if crop_method != "random":
        points = None
        if crop_method == "objects":  # each object's direction at the middle of the frames used
            tracks = [np.asarray(track, np.float64) for track in objects if track is not None and len(track)]
            middle = start + frames_per_clip // 2
            points = np.reshape([direction_to_equirect(*track[min(middle, len(track) - 1)]) for track in tracks],
                                (-1, 2))
        centres, fovs = sample_viewpoints(rng, viewpoints, panorama_aspect=width / height, crop_method=crop_method,
                                          foa=foa, objects=points)
    videos, audios = [], []
    for centre, fov in zip(centres, fovs):
        crops = perspective_crops(window, centre, fov, (crop_size, crop_size)) / 255.0
        field = rotate_foa(foa, *equirect_to_direction(*centre))
        if training and augment:
            if rng.random() < 0.5:
                crops, field = crops[:, :, ::-1], mirror_foa(field)
            crops = color_jitter(crops, rng)
            field = field * rng.uniform(*GAIN_LIMITS)
        videos.append(imagenet.normalize_images(np.clip(crops, 0.0, 1.0) * 255.0))
        audios.append(field)
    return {"video": np.stack(videos).astype(np.float32), "audio": np.stack(audios).astype(np.float32),
            "centres": centres.astype(np.float32), "rotated": np.float32(rotated)}


def mel_statistics(root, split="train", max_clips=400, progress=False):
    """Per-mel mean and standard deviation of the training log-mels (all four channels, every frame), as the
    official normalisation statistics. Returns {"mean": [128], "std": [128]} (lists, for a model's config)."""
    import tensorflow as tf
    from tqdm.auto import tqdm

    from keras_avloc.data.audio import avsa_logmel

    records = _records(root, split)[: int(max_clips)]
    total, total_sq, count = None, None, 0
    for record in tqdm(records, desc="mel statistics", unit="clip", disable=not progress):
        try:
            foa = load_clip_audio(root, record)
        except MediaError:
            continue
        mels = avsa_logmel(tf.constant(foa[None])).numpy()[0].astype(np.float64)  # [T, 128, 4]
        values = mels.transpose(1, 0, 2).reshape(mels.shape[1], -1)
        total = values.sum(1) if total is None else total + values.sum(1)
        total_sq = (values ** 2).sum(1) if total_sq is None else total_sq + (values ** 2).sum(1)
        count += values.shape[1]
    if not count:
        raise SphereDataError(f"{os.path.join(root, split + '.json')}: no readable clip to compute the log-mel "
                              "statistics from; check the audio/ folder (4-channel ambiX wav files, as `avloc data sphere` "
                              "writes them).")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}


def load_clip_audio(root, record):
    """The 1 s ambiX field [4, T] of a record (without decoding its video)."""
    _, audio_path = clip_paths(root, record)
    foa = read_multichannel_audio(audio_path, SAMPLE_RATE, 4)
    length = int(SAMPLE_RATE * AUDIO_SECONDS)
    return np.pad(foa, ((0, 0), (0, max(0, length - foa.shape[1]))))[:, :length]


def _records(root, split):
    path = os.path.join(root, f"{split}.json")
    if not os.path.isfile(path):
        raise SphereDataError(f"{path}: no such split file; build the 360° dataset with `avloc data sphere --out "
                              f"{root}` (or list your clips there).")
    records = load_split(root, split)
    if not records:
        raise SphereDataError(f"{path}: the split is empty.")
    video, _ = clip_paths(root, records[0])
    if not os.path.isfile(video):
        raise SphereDataError(f"{path}: its first clip has no equirectangular video ({video}); AVC / AVSA read 360° "
                              f"clips (video/<id>.mp4 with a 4-channel ambiX track or audio/<id>.wav): build them with "
                              f"`avloc data sphere --out DIR` or fetch them with `avloc download --spatial`.")
    return records


def make_sphere_dataset(root, split="train", training=False, batch_size=8, viewpoints=4, frames=FRAMES,
                        crop_size=CROP_SIZE[0], seed=None, augment=True, misalign=0.0, drop_remainder=None,
                        on_error="skip", repeat_viewpoints=False, max_clips=None, cache=False, crop_method="random",
                        audio_input="ambix"):
    """The viewpoint batches of a 360° split (see the module docstring).

    Args:
        root: dataset root.
        split: split name (`<root>/<split>.json`).
        training: shuffle, random frame windows, augmentation, new viewpoints every epoch.
        batch_size: clips per batch.
        viewpoints: viewpoints per clip (AVC 1, AVSA 4).
        frames: frames per viewpoint clip (8).
        crop_size: crop side (112).
        seed: random seed; in evaluation the viewpoints depend only on it and the clip (the same every pass).
        augment: flip / jitter / gain in training.
        misalign: probability of a random yaw of the whole field (AVSA-Bin), 0 = never.
        drop_remainder: drop the last incomplete batch (default: when training).
        on_error: "skip" (unreadable clips are counted, `dataset.skipped`, and reported) or "raise".
        repeat_viewpoints: in evaluation, draw new viewpoints on every pass (probe training sets).
        max_clips: use the split's first clips only.
        cache: keep every decoded clip in memory after its first use (no mp4 decoding from the second epoch on;
            a 256 x 512 clip of 16 frames takes 6.3 MB, so 480 clips need 3 GB).
        crop_method: "random" (official default), "ambi_pow" or "objects" (`keras_avloc.data.viewpoints`; "objects"
            reads the objects' directions from the records).
        audio_input: "ambix" (official: the four log-mels) or "ambix_intensity" (and the three mel-band intensity
            channels, `keras_avloc.data.audio.avsa_intensity`): x["audio"] gets 4 or 7 channels.

    Returns:
        `tf.data.Dataset` of (x, y) with `records`, `class_list` and `skipped` ([count]) attributes.

    Example:
    >>> ds = make_sphere_dataset("datasets/sphere", "train", training=True, viewpoints=4)  # doctest: +SKIP
    """
    import tensorflow as tf

    from keras_avloc.data.audio import SPHERE_AUDIO_INPUTS, sphere_audio_features

    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}.")
    if crop_method not in CROP_METHODS:
        raise ValueError(f"crop_method must be one of {', '.join(CROP_METHODS)}, got {crop_method!r}.")
    if audio_input not in SPHERE_AUDIO_INPUTS:
        raise ValueError(f"audio_input must be one of {', '.join(SPHERE_AUDIO_INPUTS)}, got {audio_input!r}.")
    records = _records(root, split)[: None if max_clips is None else int(max_clips)]
    if crop_method == "objects" and not any(item.get("direction") is not None and len(item["direction"])
                                            for record in records for item in record.get("objects") or []):
        raise SphereDataError(f"{os.path.join(os.fspath(root), split + '.json')}: crop_method 'objects' centres "
                              "viewpoints on each clip's objects, read from its record ('objects', each with a "
                              "per-frame 'direction' [azimuth, elevation]), and no record here has any. The clips of "
                              "`avloc data sphere` have them; for other clips add each object's per-frame 'direction' "
                              "to the split file, or use 'random' or 'ambi_pow'.")
    seed = 0 if seed is None else int(seed)
    skipped = [0]
    decoded = {}
    frames, crop_size, viewpoints = int(frames), int(crop_size), int(viewpoints)
    length = int(SAMPLE_RATE * AUDIO_SECONDS)

    def load(index, draw):
        index, draw = int(index), int(draw)
        rng = np.random.default_rng([seed, index, draw] if (training or repeat_viewpoints) else [seed, index])
        try:
            clip = decoded.get(index) or load_clip(root, records[index])
            if cache:
                decoded[index] = clip
            clip_frames, foa = clip
            example = clip_viewpoints(clip_frames, foa, rng, viewpoints, frames, crop_size, training, augment,
                                      misalign, crop_method, [item.get("direction") for item in
                                                              records[index].get("objects") or []])
            ok = True
        except MediaError as err:
            if on_error == "raise":
                raise
            skipped[0] += 1
            print(f"warning: skipping {records[index]['file']} ({err}); {skipped[0]} skipped so far")
            example = {"video": np.zeros((viewpoints, frames, crop_size, crop_size, 3), np.float32),
                       "audio": np.zeros((viewpoints, 4, length), np.float32),
                       "centres": np.zeros((viewpoints, 2), np.float32), "rotated": np.float32(0)}
            ok = False
        return example["video"], example["audio"], example["centres"], example["rotated"], ok

    def load_graph(index, draw):
        video, audio, centres, rotated, ok = tf.numpy_function(
            load, [index, draw], [tf.float32, tf.float32, tf.float32, tf.float32, tf.bool], stateful=False)
        video.set_shape((viewpoints, frames, crop_size, crop_size, 3))
        audio.set_shape((viewpoints, 4, length))
        centres.set_shape((viewpoints, 2))
        rotated.set_shape(())
        ok.set_shape(())
        return {"video": video, "audio": audio, "centres": centres, "rotated": rotated, "index": index, "ok": ok}

    indices = tf.data.Dataset.range(len(records))
    if training:
        indices = indices.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=bool(training or repeat_viewpoints))
    dataset = tf.data.Dataset.zip((indices, draws.map(lambda value: value % (2 ** 31))))
    dataset = dataset.map(load_graph, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    dataset = dataset.filter(lambda example: example["ok"])
    dataset = dataset.batch(int(batch_size), drop_remainder=training if drop_remainder is None else drop_remainder)

    def features(batch):
        shape = tf.shape(batch["audio"])
        mels = sphere_audio_features(tf.reshape(batch["audio"], [-1, 4, length]), audio_input)
        mels = tf.reshape(mels, tf.concat([shape[:2], tf.shape(mels)[1:]], axis=0))
        mels.set_shape((None, viewpoints, 1 + length // 240, 128, SPHERE_AUDIO_INPUTS[audio_input]))
        x = {"image": batch["video"], "audio": mels}
        y = {"rotated": batch["rotated"], "centres": batch["centres"], "index": batch["index"]}
        return x, y

    dataset = dataset.map(features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    dataset.records = records
    dataset.class_list = sorted({record.get("class") for record in records if record.get("class")})
    dataset.skipped = skipped
    return dataset
