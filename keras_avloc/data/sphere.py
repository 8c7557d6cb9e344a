"""A synthetic 360° benchmark for AVC / AVSA: stamp objects on equirectangular panoramas with first-order ambisonics.

No 360° video with spatial audio can be downloaded here, so `build_sphere` composes clips with exact ground
truth from the same Debian media as the stamps benchmark (`keras_avloc.data.stamps`):

* the panorama (equirectangular, 2:1) is two background photos side by side; the splits use disjoint
  backgrounds, and their recordings are split as the stamps benchmark splits them (train: the first part);
* 1-3 photo stamps stand at random directions (latitude within the official viewpoint band, y in
  [0.38, 0.62]), stretched by 1 / cos(latitude) as an equirectangular image stretches them, and drift slowly
  in azimuth over the clip (up to +-8° per second); the first one sounds, the others are silent;
* the sounding object's own recording is encoded into ambiX (ACN / SN3D, `keras_avloc.spatial`) with the exact
  spherical-harmonic gains of its direction at every sample, plus (by default) two early reflections (image
  sources below and behind it, 3-20 ms later, 6-12 dB weaker) and a diffuse ambience (a real ambience recording,
  eight decorrelated parts from the corners of a cube, 15-25 dB below).

Layout (the standard one, see data/README.md): `video/<id>.mp4` (16 equirectangular frames at 16 fps, 1 s),
`audio/<id>.wav` (4 channels, ambiX W, Y, Z, X, 24 kHz, 1 s), `frames/<id>.jpg` (the middle frame),
`masks/<id>.png` (the sounding object on the middle frame), `masks/<id>_o<k>.png` (every object), and
`<split>.json` whose records list every object with its class, box, mask, `sounding` flag and `direction`
([azimuth, elevation] in radians at each video frame). Every scene is a pure function of (seed, split, index);
builds resume (finished scenes are kept).
"""

import json
import os
import time

import numpy as np

from keras_avloc.data import stamps
from keras_avloc.io import files, media as media_io
from keras_avloc.spatial.ambisonics import foa_gains
from keras_avloc.spatial.geometry import equirect_to_direction

VIDEO_FPS = 16
FRAMES = 16  # 1 s; the official clips use 8 frames (0.5 s) of it with 1 s of audio
AUDIO_RATE = 24000
AUDIO_SECONDS = 1.0
LATITUDE_BAND = (0.38, 0.62)
MAX_DRIFT = 8.0 / 360.0  # panorama widths per second
PEAK_LEVEL = 0.9
SPLITS = ("train", "val", "test")
BUILDER_VERSION = 1
CUBE_CORNERS = [(np.arctan2(y, x), np.arcsin(z / np.sqrt(3.0))) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]


def _paste(canvas, patch, centre_x, top):
    """Alpha-composites a premultiplied RGBA patch with its centre column at `centre_x` (wrapping around the
    panorama's seam); returns the patch's alpha on the canvas."""
    height, width = canvas.shape[:2]
    h, w = patch.shape[:2]
    cols = (int(round(centre_x * width - w / 2.0)) + np.arange(w)) % width
    rows = np.arange(top, top + h)
    keep = (rows >= 0) & (rows < height)
    rows, part = rows[keep], patch[keep]
    region = canvas[rows[:, None], cols[None, :]]
    canvas[rows[:, None], cols[None, :]] = part[..., :3] + region * (1.0 - part[..., 3:4])
    alpha = np.zeros((height, width), np.float32)
    alpha[rows[:, None], cols[None, :]] = part[..., 3]
    return alpha


def _panorama(media, names, size):
    """Two background photos side by side, each resized to half the panorama."""
    import cv2

    height, width = size
    halves = []
    for name in names:
        photo = media.background(name)
        halves.append(cv2.resize(photo, (width // 2, height), interpolation=cv2.INTER_AREA))
    return np.concatenate(halves, axis=1).astype(np.float32)


def _resample(wave):
    from scipy.signal import resample_poly

    return resample_poly(wave, AUDIO_RATE // 8000, stamps.SAMPLE_RATE // 8000).astype(np.float64)


def encode_moving(signal, phi, nu):
    """ambiX [4, T] of `signal` [T] from a direction that changes per sample (phi, nu [T])."""
    return (foa_gains(phi, nu) * np.asarray(signal, np.float64)[:, None]).T


def _delayed(signal, delay):
    out = np.zeros_like(signal)
    out[delay:] = signal[: len(signal) - delay]
    return out


def render_scene(task, info, options, media):
    """Builds and writes one 360° scene; returns its record (a pure function of the task)."""
    split, index = task
    root, size, seed = options["root"], options["size"], options["seed"]
    height, width = size
    rng = stamps._scene_rng(seed, "sphere_" + split, index)
    file_id = f"sphere_{split}_{index:05d}"
    backgrounds = options["backgrounds"][split]
    panorama = _panorama(media, [stamps._pick(backgrounds, rng), stamps._pick(backgrounds, rng)], size)
    main_class = stamps.balanced_class(info["classes"], seed, "sphere_" + split, index)
    visible = [main_class] + stamps._other_classes(info["classes"] + info["distractor_classes"], [main_class],
                                                   int(rng.integers(0, 3)), rng)
    chosen = [stamps._pick([s for s in stamps._stamps_of(info, c) if s["sounding"] or c != main_class], rng)
              for c in visible]
    # directions: spread in azimuth so objects do not pile up; the sounding one anywhere
    start_x = np.mod(rng.random() + np.arange(len(visible)) / len(visible) + rng.uniform(-0.05, 0.05, len(visible)), 1.0)
    ys = rng.uniform(*LATITUDE_BAND, size=len(visible))
    drift = rng.uniform(-MAX_DRIFT, MAX_DRIFT, size=len(visible))
    patches = []
    for stamp, y in zip(chosen, ys):
        angle = rng.uniform(25.0, 45.0) / 360.0  # angular width, in panorama widths
        rgba = media.stamp(stamp["stamp"])
        w = max(4, int(round(angle * width / max(np.cos(equirect_to_direction(0.5, y)[1]), 0.2))))
        h = max(4, int(round(angle * 2.0 * height * rgba.shape[0] / rgba.shape[1])))
        patches.append(stamps._prepare_object(media, stamp["stamp"], (w, h), rng))
    frames, masks_middle, directions = [], None, [[] for _ in visible]
    for frame in range(FRAMES):
        seconds = frame / VIDEO_FPS
        canvas = panorama.copy()
        alphas = []
        for number, (patch, x0, y) in enumerate(zip(patches, start_x, ys)):
            centre_x = float(np.mod(x0 + drift[number] * seconds, 1.0))
            top = int(round(y * height - patch.shape[0] / 2.0))
            alphas.append(_paste(canvas, patch, centre_x, top))
            phi, nu = equirect_to_direction(centre_x, y)
            directions[number].append([round(float(phi), 6), round(float(nu), 6)])
        frames.append(np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8))
        if frame == FRAMES // 2:
            masks_middle = stamps.visible_masks(alphas)

    # Audio: the sounding object's recording from its moving direction, reflections, ambience.
    length = int(AUDIO_RATE * AUDIO_SECONDS)
    recording = stamps._choose_recording(info, main_class, options["part"][split], rng)
    clip16, provenance = stamps._recording_clip(media, recording, options["part"][split],
                                                int(stamps.SAMPLE_RATE * AUDIO_SECONDS), rng)
    dry = _resample(clip16)[:length]
    seconds = np.arange(length) / AUDIO_RATE
    x_t = np.mod(start_x[0] + drift[0] * seconds, 1.0)
    phi_t, nu_t = equirect_to_direction(x_t, np.full(length, ys[0]))
    foa = encode_moving(dry, phi_t, nu_t)
    extras = {}
    if options["reflections"]:
        for name, (delay_ms, level_db), (phi_r, nu_r) in (
                ("floor", (rng.uniform(3, 8), rng.uniform(-9, -6)), (phi_t, -np.maximum(0.3, np.abs(nu_t) + 0.3))),
                ("back wall", (rng.uniform(8, 20), rng.uniform(-12, -8)), (phi_t + np.pi, nu_t))):
            delay = int(round(delay_ms / 1000.0 * AUDIO_RATE))
            foa += encode_moving(_delayed(dry, delay) * 10 ** (level_db / 20.0), phi_r, nu_r)
            extras[name] = {"delay_ms": round(float(delay_ms), 3), "level_db": round(float(level_db), 3)}
    if options["ambience"] and info["ambience"]:
        rel = stamps._pick(info["ambience"], rng)
        noise = _resample(media.ambience(rel))
        diffuse = np.zeros_like(foa)
        for phi_c, nu_c in CUBE_CORNERS:
            part, _ = stamps._clip_from(noise, length, rng)
            diffuse += encode_moving(part, np.full(length, phi_c), np.full(length, nu_c))
        snr_db = float(rng.uniform(15.0, 25.0))
        foa += diffuse * (stamps._rms(foa[0]) / stamps._rms(diffuse[0])) * 10 ** (-snr_db / 20.0)
        extras["ambience"] = {"recording": "scratch:Sounds/" + rel, "snr_db": round(snr_db, 3)}
    foa *= PEAK_LEVEL / max(float(np.max(np.abs(foa))), 1e-9)

    for folder in ("video", "audio", "frames", "masks"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    media_io.write_video(os.path.join(root, "video", file_id + ".mp4"), np.stack(frames), VIDEO_FPS)
    media_io.write_wav(os.path.join(root, "audio", file_id + ".wav"), foa.T.astype(np.float32), AUDIO_RATE)
    stamps._write_jpg(os.path.join(root, "frames", file_id + ".jpg"), frames[FRAMES // 2].astype(np.float32) / 255.0)
    objects = []
    for number, (class_name, mask) in enumerate(zip(visible, masks_middle)):
        mask_path = f"masks/{file_id}_o{number}.png"
        media_io.write_png(os.path.join(root, mask_path), mask)
        objects.append({"class": class_name, "bbox": [stamps.mask_box(mask)] if mask.any() else [], "mask": mask_path,
                        "sounding": number == 0, "direction": directions[number]})
    media_io.write_png(os.path.join(root, "masks", file_id + ".png"), masks_middle[0])
    record = {"file": file_id, "class": main_class, "bbox": objects[0]["bbox"], "mask": f"masks/{file_id}.png",
              "kind": "sphere", "objects": objects,
              "scene": {"stamps": [s["stamp"] for s in chosen], "audio": provenance, **extras}}
    files.write_bytes(os.path.join(root, ".parts", split, file_id + ".json"), json.dumps(record).encode())
    return record


def build_sphere(out, n_train=400, n_val=80, n_test=160, size=(256, 512), seed=0, classes=None, reflections=True,
                 ambience=True, progress=True, stamps_dir=None, media_dir=None, overwrite=False):
    """Builds (or resumes) the synthetic 360° benchmark in `out` (see the module docstring).

    Args:
        out: output root.
        n_train, n_val, n_test: scenes per split.
        size: (height, width) of the panorama; width must be twice the height.
        seed: everything random derives from (seed, split, index).
        classes: optional subset of the sounding classes (as `avloc data stamps --classes`).
        reflections, ambience: add the early reflections / the diffuse ambience.
        progress: tqdm progress bar.
        stamps_dir, media_dir: override the media folders.
        overwrite: rebuild an `out` made with other settings.

    Returns:
        dict: "splits" {split: scenes}, "classes", "built", "skipped", "seconds".
    """
    from tqdm.auto import tqdm

    height, width = (int(side) for side in size)
    if width != 2 * height or height < 16:
        raise stamps.StampsError(f"sphere panoramas are equirectangular: width must be twice the height (>= 16), "
                                 f"got {height} x {width}.")
    started = time.time()
    info = stamps.restrict_classes(stamps.load_catalog(stamps_dir, media_dir), classes)
    out = os.path.abspath(os.path.expanduser(out))
    backgrounds = stamps.split_backgrounds(info["backgrounds"], seed)
    options = {"root": out, "size": (height, width), "seed": int(seed), "reflections": bool(reflections),
               "ambience": bool(ambience), "backgrounds": backgrounds,
               "part": {"train": "train", "val": "heldout", "test": "heldout"}}
    key = {"version": BUILDER_VERSION, "size": [height, width], "seed": int(seed), "classes": info["classes"],
           "reflections": bool(reflections), "ambience": bool(ambience)}
    params_path = os.path.join(out, ".parts", "sphere_params.json")
    if os.path.isfile(params_path):
        with open(params_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous != key:
            if not overwrite:
                raise stamps.OtherBuildError(f"{out} holds a sphere build with other settings ({params_path}); choose "
                                             "a new --out folder or pass --overwrite to rebuild it.")
            for split in SPLITS:
                for name in os.listdir(os.path.join(out, ".parts", split)) if os.path.isdir(
                        os.path.join(out, ".parts", split)) else []:
                    if name.startswith("sphere_"):
                        os.remove(os.path.join(out, ".parts", split, name))
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    for split in SPLITS:
        os.makedirs(os.path.join(out, ".parts", split), exist_ok=True)
    files.write_json(params_path, key)
    media = stamps.MediaCache(info["stamps_dir"], info["scratch"])
    records, todo = stamps.finished_scenes(out, counts, "sphere_{split}_{index:05d}")
    for task in tqdm(todo, desc="sphere scenes", unit="scene", disable=not progress):
        records[task[0]][task[1]] = render_scene(task, info, options, media)
    for split in SPLITS:
        if counts[split]:
            files.write_json(os.path.join(out, f"{split}.json"), records[split], indent=1)
    files.write_json(os.path.join(out, "classes.json"), info["classes"])
    return {"splits": {split: counts[split] for split in SPLITS}, "classes": info["classes"], "built": len(todo),
            "skipped": sum(counts.values()) - len(todo), "seconds": round(time.time() - started, 2)}
