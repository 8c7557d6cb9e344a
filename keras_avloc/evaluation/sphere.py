"""Evaluation of AVC / AVSA on 360° clips: the official probes and a "where does this sound come from" map.

* Probes (official `eval-avc.py`, `eval-avsa.py`, `utils/eval_utils.py AVCWrapper`), on frozen backbone
  features of 4 viewpoints per clip: an MLP [video 512 | audio 512] -> 512 ReLU -> 2 with dropout 0.5 on its
  input, trained per crop with cross-entropy; a clip's prediction averages the logits of its 4 crops.
  AVC-Bin: is this audio from this clip? (negatives: the audio of another random clip, one per clip).
  AVSA-Bin: was the sound field turned by a random yaw U[-pi, pi) (p = 0.5) before the viewpoints were cut?
  Deviation: the official probes draw new viewpoints every epoch of 10 epochs over YouTube-360; here the
  features of `passes` viewpoint draws of the training split are cycled for `epochs` epochs (one draw per pass
  costs a full pass of the encoders), Adam lr 1e-4 for both probes, its weight decay 1e-5 decoupled (Keras). The
  probes' viewpoints are drawn as the model's training viewpoints (its `crop_method`: the official random sampler
  by default; a model trained on object-centred viewpoints is probed on them, as a detector-based pipeline would;
  `ambi_pow` models get random viewpoints for AVSA-Bin, whose turned fields would otherwise steer the crops).
* Sweep map (beyond the paper): viewpoints at a grid of directions (24 longitudes x latitudes 0.4, 0.5, 0.6 of
  the panorama, FOV 0.125 x 0.25 NFOV units), each scored by the model's `viewpoint_scores` (its video crop
  against its rotated sound field; for AVSA four viewpoints 90° apart form one sequence, as in training).
  The best direction is the direction of arrival, compared with the sounding object's true direction (middle
  frame) in degrees; the grid, interpolated onto the panorama (wrapping in longitude), binarised at 0.5 of its
  min-max range, gives cIoU against the object's panorama mask.
* Baselines in the same table: the steered-response power of the first-order field (`power_map`) on the same
  grid and its 2° maximum (`srp_direction`, the classical DoA estimate), the intensity vector, a fixed front
  prior, uniformly random directions and the video-only objectness of the model (mean |feature| of each crop).
"""

import math
import os

import numpy as np

from keras_avloc.data.audio import sphere_audio_features
from keras_avloc.data.sphere_dataset import FRAMES, load_clip, make_sphere_dataset
from keras_avloc.io.media import read_mask
from keras_avloc.metrics.localization import ciou_from_binary, success_curve_area
from keras_avloc.spatial.ambisonics import intensity_vector, power_map, rotate_foa, srp_direction
from keras_avloc.spatial.geometry import equirect_to_direction, perspective_crops, unit_vector
from keras_avloc.io import imagenet

SWEEP_LONGITUDES = 24
SWEEP_LATITUDES = (0.4, 0.5, 0.6)
SWEEP_FOV = (0.125, 0.25)
GROUP = 4  # viewpoints per sequence in the sweep (90° apart)
MAP_THRESHOLD = 0.5
HIT_DEGREES = 20.0


def sweep_directions(longitudes=SWEEP_LONGITUDES, latitudes=SWEEP_LATITUDES):
    """Panorama coordinates of the sweep grid: (xs [L] in [0, 1), ys [A])."""
    return np.arange(int(longitudes)) / float(longitudes), np.asarray(latitudes, np.float64)


def angular_error(a, b):
    """Great-circle angle in degrees between directions a and b, each (phi, nu) or [..., 2]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    cosine = np.sum(unit_vector(a[..., 0], a[..., 1]) * unit_vector(b[..., 0], b[..., 1]), axis=-1)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def sweep_inputs(frames, foa, crop_size, longitudes=SWEEP_LONGITUDES, latitudes=SWEEP_LATITUDES, fov=SWEEP_FOV,
                 audio_input="ambix"):
    """Model inputs for every sweep direction, grouped in sequences of 4 viewpoints 90° apart.

    Returns:
        (x {"image": [G, 4, F, S, S, 3], "audio": [G, 4, 101, 128, C]} (C: 4, or 7 for "ambix_intensity"),
        order int [G, 4] flat grid indices (latitude * L + longitude)).
    """
    import tensorflow as tf

    xs, ys = sweep_directions(longitudes, latitudes)
    if len(xs) % GROUP:
        raise ValueError(f"the sweep needs a multiple of {GROUP} longitudes, got {len(xs)}.")
    step = len(xs) // GROUP
    order = np.array([[row * len(xs) + start + k * step for k in range(GROUP)]
                      for row in range(len(ys)) for start in range(step)])
    videos, fields = [], []
    for index in order.ravel():
        centre = (xs[index % len(xs)], ys[index // len(xs)])
        crops = perspective_crops(frames, centre, fov, (crop_size, crop_size))
        videos.append(imagenet.normalize_images(crops))
        fields.append(rotate_foa(foa, *equirect_to_direction(*centre)))
    mels = sphere_audio_features(tf.constant(np.stack(fields).astype(np.float32)), audio_input).numpy()
    shape = order.shape
    return {"image": np.stack(videos).astype(np.float32).reshape(shape + videos[0].shape),
            "audio": mels.reshape(shape + mels.shape[1:])}, order


def _compiled(model, name):
    cache = model.__dict__.setdefault("_sphere_graphs", {})
    if name not in cache:
        import tensorflow as tf

        if name == "scores":
            cache[name] = tf.function(model.viewpoint_scores)
        else:
            def objectness(x):
                return tf.reduce_mean(tf.abs(tf.cast(model(x, training=False)["video_feat"], tf.float32)), axis=-1)
            cache[name] = tf.function(objectness)
    return cache[name]


def sweep_map(model, frames, foa, longitudes=SWEEP_LONGITUDES, latitudes=SWEEP_LATITUDES, fov=SWEEP_FOV,
              objectness=False):
    """The model's score of every sweep direction: float32 [A, L] (latitudes x longitudes); with `objectness`
    also the video-only map. Frames are the clip's `model.frames` equirectangular frames [F, H, W, 3] uint8."""
    x, order = sweep_inputs(frames, foa, model.crop_size, longitudes, latitudes, fov, model.audio_input)
    grid = np.zeros(order.size, np.float32)
    grid[order.ravel()] = np.asarray(_compiled(model, "scores")(x)).ravel()
    shape = (len(latitudes), int(longitudes))
    if not objectness:
        return grid.reshape(shape)
    objects = np.zeros(order.size, np.float32)
    objects[order.ravel()] = np.asarray(_compiled(model, "objectness")(x)).ravel()
    return grid.reshape(shape), objects.reshape(shape)


def srp_grid(foa, longitudes=SWEEP_LONGITUDES, latitudes=SWEEP_LATITUDES):
    """Steered-response power [A, L] of the field on the sweep grid."""
    xs, ys = sweep_directions(longitudes, latitudes)
    phi, nu = equirect_to_direction(*np.meshgrid(xs, ys))
    return power_map(foa, phi, nu).astype(np.float32)


def grid_to_panorama(grid, size, latitudes=SWEEP_LATITUDES):
    """A sweep grid [A, L] interpolated onto a panorama [H, W]: linear in longitude (wrapping around) and in
    latitude between the grid rows (constant beyond the first and last)."""
    grid = np.asarray(grid, np.float64)
    height, width = (int(side) for side in size)
    longitudes = grid.shape[1]
    u = (np.arange(width) + 0.5) / width * longitudes
    left = np.floor(u).astype(int) % longitudes
    right = (left + 1) % longitudes
    frac = u - np.floor(u)
    rows = grid[:, left] * (1.0 - frac) + grid[:, right] * frac  # [A, W]
    v = (np.arange(height) + 0.5) / height
    lat = np.asarray(latitudes, np.float64)
    out = np.stack([np.interp(v, lat, rows[:, col]) for col in range(width)], axis=1)
    return out.astype(np.float32)


def _direction_of(grid, longitudes, latitudes):
    xs, ys = sweep_directions(longitudes, latitudes)
    row, col = np.unravel_index(int(np.argmax(grid)), grid.shape)
    return np.array(equirect_to_direction(xs[col], ys[row]))


def _map_ciou(grid, mask, latitudes):
    panorama = grid_to_panorama(grid, mask.shape, latitudes)
    span = panorama.max() - panorama.min()
    normalised = (panorama - panorama.min()) / span if span > 0 else np.zeros_like(panorama)
    return float(ciou_from_binary((normalised >= MAP_THRESHOLD)[None], mask[None])[0])


def evaluate_sphere(model, root, split="test", max_clips=None, longitudes=SWEEP_LONGITUDES, latitudes=SWEEP_LATITUDES,
                    seed=0, progress=True):
    """DoA error and panorama cIoU of a model's sweep map and of the baselines on a 360° split.

    Args:
        model: a trained AVC / AVSA model, or None for the baselines only.
        root, split: the dataset (`avloc data sphere`); records need their sounding object's `direction`.
        max_clips: evaluate the first clips only.
        longitudes, latitudes: the sweep grid.
        seed: the random baseline's seed.
        progress: tqdm progress bar.

    Returns:
        dict: "rows" {name: {"doa_median", "doa_mean", "hit20", "ciou", "auc", "clips"}} and "per_clip" records.
    """
    from tqdm.auto import tqdm

    from keras_avloc.data.sphere_dataset import _records

    records = _records(root, split)[: None if max_clips is None else int(max_clips)]
    rng = np.random.default_rng(seed)
    frames_used = model.frames if model is not None else FRAMES
    errors, cious, per_clip = {}, {}, []
    for record in tqdm(records, desc=f"sphere {split}", unit="clip", disable=not progress):
        sounding = [o for o in record.get("objects", []) if o.get("sounding") and o.get("direction") is not None]
        if not sounding:
            raise ValueError(f"{os.path.join(root, split + '.json')}: {record['file']} has no sounding object with a "
                             "'direction'; the sphere protocol needs 360° records (`avloc data sphere`).")
        frames, foa = load_clip(root, record)
        start = max(0, (len(frames) - frames_used) // 2)
        window = frames[start:start + frames_used]
        truth = np.array(sounding[0]["direction"][min(len(sounding[0]["direction"]) - 1, start + frames_used // 2)])
        mask = read_mask(record["mask"]) if record.get("mask") else None
        maps, directions = {}, {}
        srp = srp_grid(foa, longitudes, latitudes)
        maps["SRP (sweep grid)"] = srp
        directions["SRP (2° grid)"] = np.array(srp_direction(foa, 2.0))
        vector = intensity_vector(foa)
        directions["intensity vector"] = np.array([math.atan2(vector[1], vector[0]),
                                                   math.asin(np.clip(vector[2], -1.0, 1.0))])
        xs, ys = sweep_directions(longitudes, latitudes)
        front = np.exp(-angular_error(np.stack(equirect_to_direction(*np.meshgrid(xs, ys)), -1), [0.0, 0.0]) / 45.0)
        maps["front prior"] = front
        maps["random"] = rng.random(srp.shape).astype(np.float32)
        if model is not None:
            scores, objects = sweep_map(model, window, foa, longitudes, latitudes, objectness=True)
            maps[model.display_name or model.name] = scores
            maps["objectness (video only)"] = objects
        clip = {"file": record["file"], "truth": truth.tolist()}
        for name, grid in maps.items():
            directions.setdefault(name, _direction_of(grid, longitudes, latitudes))
            if mask is not None:
                cious.setdefault(name, []).append(_map_ciou(grid, mask, latitudes))
        for name, direction in directions.items():
            error = float(angular_error(direction, truth))
            errors.setdefault(name, []).append(error)
            clip[name] = round(error, 3)
        per_clip.append(clip)
    rows = {}
    for name, values in errors.items():
        values = np.asarray(values)
        row = {"doa_median": float(np.median(values)), "doa_mean": float(values.mean()),
               "hit20": float(np.mean(values <= HIT_DEGREES)), "clips": int(len(values))}
        if name in cious:
            row["ciou"] = float(np.mean(cious[name]))
            row["auc"] = success_curve_area(np.asarray(cious[name]))
        rows[name] = row
    return {"rows": rows, "per_clip": per_clip, "split": split, "grid": [len(latitudes), int(longitudes)]}


# ------------------------------------------------------------------------------------------------- probes
def probe_features(model, root, split, passes=1, batch_size=8, misalign=0.0, seed=0, training_draws=False,
                   max_clips=None):
    """Frozen backbone features of `passes` viewpoint draws of a split: video, audio [N, 4, C], rotated [N]."""
    import tensorflow as tf

    features = tf.function(lambda x: model(x, training=False))
    # ambi_pow draws its centres from the field as heard, so on turned fields it would look away from the objects:
    # AVSA-Bin could then be read from the video alone; those probes draw at random
    crop_method = "random" if misalign and model.crop_method == "ambi_pow" else model.crop_method
    videos, audios, rotated = [], [], []
    for number in range(int(passes)):
        dataset = make_sphere_dataset(root, split, training=False, batch_size=batch_size, viewpoints=4,
                                      frames=model.frames, crop_size=model.crop_size, seed=seed + number,
                                      misalign=misalign, repeat_viewpoints=training_draws, max_clips=max_clips,
                                      crop_method=crop_method, audio_input=model.audio_input)
        for x, y in dataset:
            out = features(x)
            videos.append(np.asarray(out["video_feat"], np.float32))
            audios.append(np.asarray(out["audio_feat"], np.float32))
            rotated.append(y["rotated"].numpy())
    return np.concatenate(videos), np.concatenate(audios), np.concatenate(rotated).astype(np.int64)


def _probe_classifier(input_dim, dropout=0.5, seed=0):
    import keras

    keras.utils.set_random_seed(int(seed))
    inputs = keras.Input((input_dim,))
    x = keras.layers.Dropout(dropout)(inputs)
    x = keras.layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x))


def _avc_pairs(video, audio, rng):
    """Positives (label 0) and, for each clip, the audio of another random clip (label 1), as `create_avc_pairs`."""
    count = len(video)
    other = rng.integers(0, count - 1, size=count)
    other = other + (other >= np.arange(count))
    return (np.concatenate([video, video]), np.concatenate([audio, audio[other]]),
            np.concatenate([np.zeros(count, np.int64), np.ones(count, np.int64)]))


def train_probe(video, audio, labels, epochs=30, learning_rate=1e-4, weight_decay=1e-5, batch_size=32, seed=0,
                pairs=None):
    """Trains the probe MLP per crop on clip-level labels; `pairs` (an rng) re-draws AVC negatives every epoch."""
    import keras

    model = _probe_classifier(video.shape[-1] + audio.shape[-1], seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, weight_decay=weight_decay or None),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    views = video.shape[1]
    for epoch in range(int(epochs)):
        v, a, y = _avc_pairs(video, audio, pairs) if pairs is not None else (video, audio, labels)
        inputs = np.concatenate([v, a], axis=-1).reshape(-1, v.shape[-1] + a.shape[-1])
        targets = np.repeat(y, views)
        model.fit(inputs, targets, batch_size=batch_size * views, epochs=1, verbose=0, shuffle=True)
    return model


def probe_accuracy(probe, video, audio, labels):
    """Clip accuracy: logits averaged over the clip's crops."""
    views = video.shape[1]
    inputs = np.concatenate([video, audio], axis=-1).reshape(-1, video.shape[-1] + audio.shape[-1])
    logits = np.asarray(probe.predict(inputs, verbose=0, batch_size=256)).reshape(len(video), views, 2).mean(1)
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def evaluate_probes(model, root, train_split="train", test_split="test", passes=3, epochs=30, seed=0, max_clips=None):
    """AVC-Bin and AVSA-Bin accuracies (see the module docstring); the probes train on the first `max_clips`
    clips of `train_split` (all by default). Returns {"avc_bin", "avsa_bin", ...}."""
    rng = np.random.default_rng(seed)
    video, audio, _ = probe_features(model, root, train_split, passes=passes, seed=seed, training_draws=True,
                                     max_clips=max_clips)
    avc_probe = train_probe(video, audio, None, epochs=epochs, seed=seed, pairs=rng)
    test_video, test_audio, _ = probe_features(model, root, test_split, seed=seed + 100)
    v, a, y = _avc_pairs(test_video, test_audio, np.random.default_rng(seed + 1))
    avc_bin = probe_accuracy(avc_probe, v, a, y)
    video, audio, rotated = probe_features(model, root, train_split, passes=passes, misalign=0.5, seed=seed,
                                           training_draws=True, max_clips=max_clips)
    avsa_probe = train_probe(video, audio, rotated, epochs=epochs, seed=seed)
    test_video, test_audio, test_rotated = probe_features(model, root, test_split, misalign=0.5, seed=seed + 100)
    avsa_bin = probe_accuracy(avsa_probe, test_video, test_audio, test_rotated)
    return {"avc_bin": avc_bin, "avsa_bin": avsa_bin, "train_clips": int(len(video) // max(1, passes)),
            "test_clips": int(len(test_video)), "rotated_share": float(test_rotated.mean())}


def sphere_table(results, probes=None):
    """A markdown table of `evaluate_sphere` rows (and the probe accuracies of the learned models)."""
    lines = ["| method | DoA median (°) | DoA mean (°) | within 20° | panorama cIoU | AUC | AVC-Bin | AVSA-Bin |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        probe = (probes or {}).get(name, {})
        cell = lambda key, fmt: fmt.format(row[key]) if key in row else "—"  # noqa: E731
        lines.append(f"| {name} | {row['doa_median']:.1f} | {row['doa_mean']:.1f} | {row['hit20']:.3f} | "
                     f"{cell('ciou', '{:.3f}')} | {cell('auc', '{:.3f}')} | "
                     f"{probe.get('avc_bin', float('nan')):.3f} | {probe.get('avsa_bin', float('nan')):.3f} |"
                     .replace("nan", "—"))
    return "\n".join(lines)


def run_sphere_protocol(model, root, split="test", out_dir=None, probes=False, probe_split="train", max_clips=None,
                        progress=True, figures=4, probe_clips=None):
    """`avloc evaluate --protocol sphere`: `evaluate_sphere` (+ `evaluate_probes`), written to OUT/metrics.json
    with the per-clip errors and `figures` panorama figures (the model's map beside the steered-response power).

    Returns:
        dict: "rows", "probes" (or None), "table", "per_clip", "seconds".
    """
    import time

    from keras_avloc.io import files

    started = time.time()
    results = evaluate_sphere(model, root, split, max_clips=max_clips, progress=progress)
    name = (model.display_name or model.name) if model is not None else None
    probe = (evaluate_probes(model, root, probe_split, split, max_clips=probe_clips) if probes and model is not None
             else None)
    results["probes"] = probe
    results["table"] = sphere_table(results, {name: probe} if probe else None)
    results["seconds"] = round(time.time() - started, 1)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        files.write_json(os.path.join(out_dir, "metrics.json"), results)
        if model is not None and figures:
            from keras_avloc.data.sphere_dataset import _records

            for record in _records(root, split)[: int(figures)]:
                panorama_figure(model, root, record, os.path.join(out_dir, f"sphere_{record['file']}.png"))
    return results


def panorama_figure(model, root, record, path):
    """The model's sweep map and the steered-response power over a clip's middle frame, with both directions of
    arrival (crosses) and the true one (circle)."""
    from keras_avloc.spatial.geometry import direction_to_equirect
    from keras_avloc.viz.figures import sphere_figure

    frames, foa = load_clip(root, record)
    start = max(0, (len(frames) - model.frames) // 2)
    window = frames[start:start + model.frames]
    grid = sweep_map(model, window, foa)
    size = frames.shape[1:3]
    maps = {model.display_name or model.name: grid_to_panorama(grid, size), "SRP": grid_to_panorama(srp_grid(foa), size)}
    directions = {list(maps)[0]: direction_to_equirect(*_direction_of(grid, SWEEP_LONGITUDES, SWEEP_LATITUDES)),
                  "SRP": direction_to_equirect(*srp_direction(foa, 2.0))}
    sounding = [o for o in record.get("objects", []) if o.get("sounding") and o.get("direction") is not None]
    truth = direction_to_equirect(*sounding[0]["direction"][start + model.frames // 2]) if sounding else None
    sphere_figure(frames[start + model.frames // 2], maps, directions, truth, path=path, title=record["file"])
    return path
