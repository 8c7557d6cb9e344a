"""Negative-audio protocol: each positive frame also heard with silence, noise and an off-screen clip.

The metrics are `keras_avloc.metrics.negative` (xavijuanola/vssl_eval). Each pass draws one off-screen clip of
another class per frame (`controls.swapped_audio_records`) and one Gaussian-noise waveform, from the pass's seed. The
official runs make 10 passes with the seeds of `OFFICIAL_SEEDS` and pool them; positive maps do not change between
passes.

Inputs: silence is a waveform of zeros and noise is N(0, 1) samples, both as long as the clips. Both go through the
model's own front-end, including its level normalisation when it has one. The official code skips the log for noise
and silence for EZ-VSL, SLAVC and FNAC, so those models see a spectrogram near zero. `official_log_quirk=True`
reproduces this for the "lvs" front-end (power / 12); the default keeps the log, which is correct.

The universal threshold is one number on the scale of the maps `localize` returns. Those maps are raw cosines; the
official EZ-VSL / SLAVC / FNAC maps are (cosine + 1) / 2. Pass a threshold, or let `choose_threshold` pick one on
val: the candidate that maximises `f_pos_neg` (`choose_threshold`).

Example:
>>> metrics = evaluate_negative_audio(model, "datasets/stamps", load_split("datasets/stamps", "test"),
...                                   threshold=choose_threshold(model, "datasets/stamps", val_records))  # doctest: +SKIP
"""

import numpy as np

from keras_avloc.evaluation.controls import swapped_audio_records
from keras_avloc.evaluation.report import EvaluationError, Problems, _objectness
from keras_avloc.evaluation.runner import model_inputs, resolve_settings, write_outputs
from keras_avloc.io import media
from keras_avloc.metrics import GT_SIZE
from keras_avloc.metrics.baselines import center_prior
from keras_avloc.metrics.negative import NEGATIVE_KINDS, NegativeAudioEvaluator

CANDIDATE_PIXEL_QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
OFFICIAL_SEEDS = (1234, 2345, 3456, 4567, 5678, 6789, 7890, 8901, 9012, 9999)
TABLE_COLUMNS = (("IoU", "mean_iou"), ("AUC", "auc"), ("pIA silence", "pia_silence"), ("pIA noise", "pia_noise"),
                 ("pIA off-screen", "pia_offscreen"), ("AOC (mean)", "aoc_mean"), ("F", "f_pos_neg"),
                 ("F (AUC, AOC)", "f_auc_aoc_neg"), ("pIA off-screen @median", "pia_offscreen_median"))


def _frontend(model, settings, official_log_quirk):
    from keras_avloc.data.audio import LVS_LOG_FLOOR, LVS_LOG_SCALE, with_level

    name = getattr(model, "frontend", None) or "lvs"
    levelled = with_level(name, settings["audio_level_db"])
    if not official_log_quirk:
        return levelled
    if name != "lvs":
        raise EvaluationError(f"official_log_quirk reproduces vssl_eval's log-free noise and silence for the 'lvs' "
                              f"front-end (EZ-VSL, SLAVC, FNAC); this model uses {name!r}.")

    def without_log(wave):
        spec = np.asarray(levelled(wave), np.float64)
        return ((np.exp(spec * LVS_LOG_SCALE) - LVS_LOG_FLOOR) / LVS_LOG_SCALE).astype(np.float32)

    return without_log


def _ground_truth(record):
    from keras_avloc.evaluation.is3 import entry_ground_truth

    return entry_ground_truth(record, "box")


def _baseline(name, frames, encoder):
    """A no-learning map of each frame (the same whatever the audio): the centre prior or objectness."""
    if name == "center":
        return center_prior(len(frames), GT_SIZE)
    return _objectness(encoder, frames)


def _run(model, root, records, thresholds, seeds, settings, batch_size, problems, progress, official_log_quirk,
         encoder=None):
    """{name: `NegativeAudioEvaluator`} over `records` with one pass per seed; `thresholds` maps "model" and the
    baselines to score ("center", "objectness" with `encoder`) to their thresholds. A baseline's map is the same
    for every audio, so its negative maps are its positive map."""
    from keras_avloc.data.audio import FRONTEND_SAMPLE_RATES

    evaluators = {name: NegativeAudioEvaluator(values) for name, values in thresholds.items()}
    frontend = _frontend(model, settings, official_log_quirk)
    samples = int(round(settings["clip_seconds"] * FRONTEND_SAMPLE_RATES.get(getattr(model, "frontend", None)
                                                                              or "lvs", 16000)))
    size = (GT_SIZE, GT_SIZE)
    for seed in seeds:
        rng = np.random.default_rng([int(seed), 7])
        # Positive and off-screen inputs of a frame are neighbours (2i, 2i + 1): a pair whose clip cannot be read
        # is dropped whole, and only a pair split by a batch boundary waits for the next batch.
        interleaved = [record for pair in zip(records, swapped_audio_records(records, seed)) for record in pair]
        pending = {}
        for positions, images, audio in model_inputs(model, root, interleaved, settings, batch_size, problems,
                                                     progress, f"negative audio (seed {seed})"):
            maps = np.asarray(model.localize(images, audio, image_size=size), np.float32)
            for row, position in enumerate(positions):
                pending[int(position)] = (images[row], maps[row])
            ready = sorted(p for p in pending if p % 2 == 0 and p + 1 in pending)
            latest = max(pending)
            for stale in [p for p in pending if (p % 2 == 0 and p + 1 not in pending and p + 1 < latest)
                          or (p % 2 == 1 and p - 1 not in pending)]:
                pending.pop(stale)  # the other half of its pair could not be read
            if ready:
                frames = np.stack([pending[p][0] for p in ready])
                positive = np.stack([pending[p][1] for p in ready])
                offscreen = np.stack([pending[p + 1][1] for p in ready])
                silence = frontend(np.zeros((len(ready), samples), np.float32))
                noise = frontend(rng.normal(0.0, 1.0, (len(ready), samples)).astype(np.float32))
                negatives = {"offscreen": offscreen,
                             "silence": np.asarray(model.localize(frames, silence, image_size=size), np.float32),
                             "noise": np.asarray(model.localize(frames, noise, image_size=size), np.float32)}
                gts = np.stack([_ground_truth(records[p // 2]) for p in ready])
                evaluators["model"].update(positive, negatives, gts)
                for name in [n for n in evaluators if n != "model"]:
                    base = _baseline(name, frames, encoder)
                    evaluators[name].update(base, {kind: base for kind in NEGATIVE_KINDS}, gts)
                for p in ready:
                    pending.pop(p)
                    pending.pop(p + 1)
    if not len(evaluators["model"]):
        raise EvaluationError(f"no positive of {root} could be scored with negative audio ({problems.summary()[0]}).")
    return evaluators


def choose_threshold(model, root, records, batch_size=16, progress=True, seed=0, official_log_quirk=False,
                     baselines=(), encoder=None, **settings):
    """Universal thresholds chosen on `records` (val), for the model and each of `baselines` ("center",
    "objectness"): the candidate with the highest `f_pos_neg` (one pass, `seed`). Candidates: the deciles of the
    positive maps' maxima and the `CANDIDATE_PIXEL_QUANTILES` of their pixels (a map whose maxima are all equal,
    like the centre prior, still gets a choice).

    Returns:
        ({name: threshold}, {name: the rows of every candidate}).
    """
    resolved = resolve_settings(model, **settings)
    problems = Problems(False)
    maxima = {name: [] for name in ("model", *baselines)}
    values_seen = {name: [] for name in maxima}
    for _, images, audio in model_inputs(model, root, records, resolved, batch_size, problems, progress,
                                         "universal threshold"):
        maps = {"model": np.asarray(model.localize(images, audio, image_size=(GT_SIZE, GT_SIZE)))}
        maps.update({name: _baseline(name, images, encoder) for name in baselines})
        for name, values in maps.items():
            flat = np.asarray(values).reshape(len(images), -1)
            maxima[name].extend(flat.max(axis=1).tolist())
            values_seen[name].append(flat[:, ::61])  # a sparse sample of every map's pixels
    if not maxima["model"]:
        raise EvaluationError(f"no clip of {root} could be read to choose the universal threshold.")
    candidates = {name: np.unique(np.concatenate([
        np.quantile(np.asarray(values), np.linspace(0.1, 0.9, 9)),
        np.quantile(np.concatenate(values_seen[name]), CANDIDATE_PIXEL_QUANTILES)])) for name, values in maxima.items()}
    evaluators = _run(model, root, records, candidates, (seed,), resolved, batch_size, problems, progress,
                      official_log_quirk, encoder)
    rows = {name: evaluator.result() for name, evaluator in evaluators.items()}
    return {name: max(values, key=lambda row: row["f_pos_neg"] or 0.0)["threshold"]
            for name, values in rows.items()}, rows


def evaluate_negative_audio(model, root, records, threshold, out_dir=None, seeds=OFFICIAL_SEEDS, batch_size=16,
                            progress=True, strict=False, official_log_quirk=False, chosen_on=None, encoder=None,
                            **settings):
    """Scores a model's positive maps against its maps for silence, noise and off-screen audio.

    Args:
        model: a keras-avloc model; root: dataset root; records: the positives (`load_split`; records without a
            visible source are left out).
        threshold: the universal threshold (a number on the scale of `model.localize`), or {"model": number, and
            per baseline to score beside it ("center", "objectness" with `encoder`): its threshold}
            (`choose_threshold`).
        seeds: one pass per seed (default: the official ten).
        official_log_quirk: reproduce the official log-free noise / silence spectrograms ("lvs" front-end).
        chosen_on: how `threshold` was chosen (recorded in metrics.json).
        **settings: image_size, clip_seconds, image_mode, audio_level_db (`resolve_settings`).

    Returns:
        the metrics dict written to metrics.json: {"protocol": "negative-audio", "model": the row of
        `NegativeAudioEvaluator.result`, "baselines": {name: row}, "seeds", "skipped", ...}; each row holds its
        "threshold".
    """
    positives = [r for r in records if r.get("kind") not in ("silent", "offscreen")]
    if not positives:
        raise EvaluationError(f"{root}: the split has no positives (frames with a visible source) to score.")
    resolved = resolve_settings(model, **settings)
    problems = Problems(strict)
    kept = []
    for record in positives:
        try:
            _ground_truth(record)
            kept.append(record)
        except media.MediaError as err:
            problems.skip("ground_truth_errors", record["file"], err)
    thresholds = dict(threshold) if isinstance(threshold, dict) else {"model": threshold}
    evaluators = _run(model, root, kept, {name: [float(value)] for name, value in thresholds.items()}, tuple(seeds),
                      resolved, batch_size, problems, progress, official_log_quirk, encoder)
    rows = {}
    for name, evaluator in evaluators.items():
        rows[name] = evaluator.result()[0]
        rows[name]["aoc_mean"] = float(np.mean([rows[name][f"aoc_{kind}"] for kind in NEGATIVE_KINDS]))
    skipped, _ = problems.summary()
    metrics = {"protocol": "negative-audio", "model": rows.pop("model"), "baselines": rows, "chosen_on": chosen_on,
               "seeds": [int(s) for s in seeds], "official_log_quirk": bool(official_log_quirk),
               "source": {"model": getattr(model, "name", "model"), "settings": resolved}, "skipped": skipped}
    return write_outputs(out_dir, metrics, [])


def negative_audio_table(metrics):
    """A Markdown table of the headline negative-audio figures: the model and the baselines (rows)."""
    lines = ["| method | threshold | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
             "|---" * (len(TABLE_COLUMNS) + 2) + "|"]
    for name, row in [("model", metrics["model"])] + list(metrics.get("baselines", {}).items()):
        cells = [f"{row[key]:.4f}" if isinstance(row.get(key), float) else "-" for _, key in TABLE_COLUMNS]
        lines.append(f"| {name} | {row['threshold']:.4f} | " + " | ".join(cells) + " |")
    lines.append(f"\n{metrics['model']['num_samples']} scored samples ({len(metrics['seeds'])} passes); thresholds "
                 f"{metrics.get('chosen_on') or 'given'}")
    return "\n".join(lines)
