"""End-to-end evaluation: saved heatmaps or a model -> metrics.json, success-curve plot, best/worst grid.

Ground truth comes from the split file under the protocol's one rule (`keras_avloc.metrics.groundtruth`),
always at 224 x 224, and a model is asked for its heatmaps at 224 x 224 whatever size it ran at, so a
score never depends on the model's input size.

Bad input never stops an evaluation half-way: a clip whose media cannot be read, or a record whose ground
truth cannot be built (e.g. its mask file is unreadable), is skipped, counted and named in
`metrics["skipped"]` (and `metrics.json`); with `strict=True` (`avloc evaluate --strict`) the first one
raises `EvaluationError` naming the file instead. Annotations that the official evaluators score as they
are (boxes that cover no pixel, records whose ground truth is empty) are scored the same way here and
counted in `metrics["annotations"]`.
"""

import os
import zipfile

import numpy as np

from keras_avloc.io import media
from keras_avloc.io.errors import AvlocError
from keras_avloc.io.files import check_output_folder, write_json
from keras_avloc.io.imagenet import normalize_images
from keras_avloc.metrics.baselines import center_prior, random_maps
from keras_avloc.metrics.evaluator import NO_OBJECT_KINDS, PROTOCOLS, Evaluator
from keras_avloc.evaluation.controls import (  # noqa: F401 - part of this module's public names
    listening_summary,
    match_predicted_sources,
    mixture_maps,
    swapped_audio_records,
)
from keras_avloc.models.contract import MultiSource
from keras_avloc.metrics.groundtruth import (
    GT_SIZE,
    PROTOCOL_GT_RULES,
    GroundTruthError,
    degenerate_box_count,
    ground_truth_map,
)
from keras_avloc.metrics.localization import SUCCESS_THRESHOLDS, resize_maps

GRID_SIZE = 56
"""Side at which heatmaps are kept for the best/worst grid (keeps memory small on 5,000+ samples)."""
EXAMPLES = 20
"""How many names (with reasons) each skip / annotation count lists in metrics.json."""


class EvaluationError(AvlocError, ValueError):
    """An evaluation that cannot run (or, with `strict`, a bad clip); the message names the file and the fix."""


def _progress(iterable, total, description, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, unit="batch")


class Problems:
    """Skipped samples and annotation oddities of one evaluation, by category, with examples."""

    def __init__(self, strict=False):
        self.strict = strict
        self.skipped = {}  # category -> {name: reason}
        self.notes = {}  # category -> {name: detail}
        self.degenerate_boxes = 0

    def skip(self, category, name, reason):
        if self.strict:
            raise EvaluationError(f"{name}: {reason} (--strict stops at the first bad sample; drop --strict to "
                                  "skip and count bad samples)")
        self.skipped.setdefault(category, {})[name] = str(reason)

    def note(self, category, name, detail):
        self.notes.setdefault(category, {})[name] = detail

    def summary(self):
        skipped = {}
        for category, entries in self.skipped.items():
            skipped[category] = len(entries)
            skipped[f"{category}_examples"] = dict(list(entries.items())[:EXAMPLES])
        annotations = {"degenerate_boxes": self.degenerate_boxes}
        for category, entries in self.notes.items():
            annotations[category] = len(entries)
            annotations[f"{category}_examples"] = list(entries)[:EXAMPLES]
        return skipped, annotations


def record_ground_truth(record, protocol):
    """(ground truth [224, 224], mask [224, 224] bool or None) of a `load_split` record.

    Raises:
        MediaError: the record's mask file is unreadable; GroundTruthError: the rule cannot be applied.
    """
    mask = media.read_mask(record["mask"], GT_SIZE) if record.get("mask") else None
    return ground_truth_map(PROTOCOL_GT_RULES[protocol], record.get("boxes"), mask), mask


def source_ground_truth(record, protocol):
    """[K, 224, 224] per-source ground truth of a mixture record, or None without `sources`."""
    sources = record.get("sources") or []
    if not sources:
        return None
    maps = []
    for source in sources:
        mask = media.read_mask(source["mask"], GT_SIZE) if source.get("mask") else None
        maps.append(ground_truth_map(PROTOCOL_GT_RULES[protocol], source.get("boxes"), mask))
    return np.stack(maps)


class _Batch:
    """The ground truth of a batch of records, with the records that could not give one left out."""

    def __init__(self, records, protocol, problems):
        self.keep, gts, self.masks, self.sources = [], [], [], []
        for position, record in enumerate(records):
            try:
                gt, mask = record_ground_truth(record, protocol)
                sources = source_ground_truth(record, protocol) if PROTOCOLS[protocol]["multi"] else None
            except (media.MediaError, GroundTruthError) as err:
                problems.skip("ground_truth_errors", record["file"], err)
                continue
            problems.degenerate_boxes += degenerate_box_count(record.get("boxes"))
            if record.get("kind") not in NO_OBJECT_KINDS and not gt.any():
                problems.note("records_with_empty_ground_truth", record["file"], "")
            self.keep.append(position)
            gts.append(gt)
            self.masks.append(mask)
            self.sources.append(sources)
        self.records = [records[i] for i in self.keep]
        self.gt = np.stack(gts).astype(np.float32) if gts else np.zeros((0, GT_SIZE, GT_SIZE), np.float32)
        self.names = [r["file"] for r in self.records]
        self.kinds = [r.get("kind") for r in self.records]

    def __len__(self):
        return len(self.keep)

    def source_gts(self):
        """[B, K, 224, 224] when every record of the batch has the same number K >= 1 of sources, else None."""
        counts = {len(s) if s is not None else 0 for s in self.sources}
        if len(counts) != 1 or 0 in counts:
            return None
        return np.stack(self.sources).astype(np.float32)


def load_frame(record, size=GT_SIZE):
    """RGB uint8 [size, size, 3] of a record's frame (squashed, bicubic, as the test pipeline), or None."""
    from PIL import Image

    path = record.get("image")
    if not path or not os.path.isfile(path):
        return None
    try:
        image = media.open_image(path, min_side=size)
    except media.MediaError:
        return None
    return np.asarray(image.resize((size, size), Image.BICUBIC), np.uint8)


def load_heatmaps_npz(path):
    """Reads a heatmaps file: `files` (str [N]) and `heatmaps` ([N, h, w] or [N, K, h, w] per source)."""
    if not os.path.isfile(path):
        raise EvaluationError(f"{path} not found; pass the .npz written by `avloc localize` or np.savez.")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("files", "heatmaps") if key not in data.files]
            if missing:
                raise EvaluationError(
                    f"{path} lacks {missing}; save it with np.savez(path, files=np.array(names), heatmaps=maps)."
                )
            files = [str(name) for name in data["files"]]
            heatmaps = np.asarray(data["heatmaps"], dtype=np.float32)
    except EvaluationError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise EvaluationError(f"{path} is not a readable .npz file ({err}); re-save it with np.savez.") from err
    if heatmaps.ndim not in (3, 4) or len(heatmaps) != len(files):
        raise EvaluationError(
            f"{path}: heatmaps must be [N, h, w] (or [N, K, h, w]) with N = len(files) = {len(files)}, "
            f"got {heatmaps.shape}."
        )
    if len(set(files)) != len(files):
        raise EvaluationError(f"{path}: `files` names some clips more than once; save one heatmap per clip.")
    if not np.all(np.isfinite(heatmaps)):
        bad = sorted({files[i] for i in np.nonzero(~np.isfinite(heatmaps).reshape(len(files), -1).all(axis=1))[0]})
        raise EvaluationError(f"{path}: NaN/inf heatmaps for {len(bad)} files (e.g. {bad[:3]}); fix the model output.")
    return files, heatmaps


class _Run:
    """One evaluation (the model or a baseline): an Evaluator plus small copies of the maps."""

    def __init__(self, protocol, resize, keep_maps, strict_median=False, threshold="median"):
        self.evaluator = Evaluator(protocol, resize=resize, strict=strict_median, threshold=threshold)
        self.keep_maps = keep_maps
        self.small_maps = []

    def update(self, maps, batch, source_maps=None, source_gts=None, class_maps=None, class_ids=None):
        self.evaluator.update(
            maps, batch.gt, masks=batch.masks if any(m is not None for m in batch.masks) else None,
            kinds=batch.kinds, names=batch.names, source_heatmaps=source_maps, source_gt_maps=source_gts,
            class_heatmaps=class_maps, class_ids=class_ids,
        )
        if self.keep_maps:
            self.small_maps.append(resize_maps(maps, GRID_SIZE).astype(np.float32))


def _baseline_maps(name, count, indices, seed, objectness=None):
    if name == "center":
        return center_prior(count, GT_SIZE)
    if name == "random":
        return np.concatenate([random_maps(1, GT_SIZE, seed=seed, start=int(i)) for i in indices])
    return objectness


def _objectness(image_encoder, images):
    """The objectness baseline (`keras_avloc.models.objectness_map`) of an encoder at 224 x 224."""
    from keras_avloc.models.base import objectness_map

    features = np.asarray(image_encoder(images, training=False))
    if features.ndim != 4:
        raise EvaluationError(f"the objectness baseline needs an image encoder returning [B, h, w, C] feature maps, "
                              f"got shape {features.shape}.")
    return resize_maps(np.asarray(objectness_map(features)), GT_SIZE)


def _check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; choose one of {', '.join(sorted(PROTOCOLS))}.")


def _records(root, split, records=None, missing=None, problems=None):
    """`records` (built in memory) or `ROOT/<split>.json`'s; listed samples without media go to `problems`."""
    import keras_avloc.data as data_lib

    for name, reason in (missing or {}).items():
        problems.skip("listed_without_media", name, reason)
    if records is not None:
        return list(records)
    records = data_lib.load_split(root, split)
    if not records:
        raise EvaluationError(f"{os.path.join(root, split + '.json')} has no entries; nothing to evaluate.")
    return records


def evaluate_heatmaps(
    heatmaps_npz,
    root,
    split="test",
    protocol="vggss",
    out_dir=None,
    baselines=False,
    image_encoder=None,
    batch_size=64,
    resize="align_corners",
    progress=True,
    seed=0,
    strict=False,
    strict_median=False,
    threshold="median",
    records=None,
    missing=None,
):
    """Scores saved heatmaps against the ground truth of `ROOT/<split>.json`.

    Args:
        heatmaps_npz: .npz with `files` [N] and `heatmaps` [N, h, w] (or [N, K, h, w] per-source maps,
            scored per source and, as their pixel-wise maximum, against the union ground truth).
        root: dataset root.
        split: split name (`ROOT/<split>.json`).
        protocol: one of `PROTOCOLS`.
        out_dir: where metrics.json, per_sample.json (name, cIoU, pointing hit, confidence per sample),
            success_curve.png and best_worst.png go (None: nothing written).
        baselines: also score the centre prior, random maps and (with `image_encoder`) objectness.
        image_encoder: optional Keras image encoder for the objectness baseline (reads ROOT/frames).
        batch_size: samples per Evaluator update.
        resize: heatmap upsampling mode (see `keras_avloc.metrics.resize_maps`).
        progress: show a tqdm bar.
        seed: seed of the random baseline.
        strict: raise on the first record whose ground truth cannot be built instead of skipping it.
        strict_median: `>` instead of `>=` at the median threshold (the original LVS test script).
        threshold: "median" or a fixed threshold on the maps' own scale (`keras_avloc.metrics.Evaluator`).
        records: records built in memory (e.g. `keras_avloc.data.extended_records`) instead of the split file's.
        missing: {name: reason} of listed samples whose media are missing: counted and named in `skipped`
            (`listed_without_media`), an error with `strict`.

    Returns:
        dict as written to metrics.json: {"model": {...}, "baselines": {...}, "skipped": {...},
        "annotations": {...}, ...}.
    """
    _check_protocol(protocol)
    if out_dir is not None:
        check_output_folder(out_dir)
    problems = Problems(strict)
    records = _records(root, split, records, missing, problems)
    files, heatmaps = load_heatmaps_npz(heatmaps_npz)
    by_name = {record["file"]: record for record in records}
    matched = [i for i, name in enumerate(files) if name in by_name]
    unmatched = [name for name in files if name not in by_name]
    if not matched:
        raise EvaluationError(
            f"none of the {len(files)} heatmap files appear in {os.path.join(root, split + '.json')}; "
            "check --data / --split (heatmap `files` must equal the records' 'file' values)."
        )
    covered = {files[i] for i in matched}
    without_maps = [record["file"] for record in records if record["file"] not in covered]
    baseline_names = ["center", "random"] + (["objectness"] if image_encoder is not None else [])
    model_run = _Run(protocol, resize, keep_maps=True, strict_median=strict_median, threshold=threshold)
    runs = ({name: _Run(protocol, resize, False, strict_median, threshold) for name in baseline_names}
            if baselines else {})
    chunks = [matched[start : start + batch_size] for start in range(0, len(matched), batch_size)]
    for chunk in _progress(chunks, len(chunks), "evaluate", progress):
        batch = _Batch([by_name[files[i]] for i in chunk], protocol, problems)
        if not len(batch):
            continue
        rows = [chunk[k] for k in batch.keep]
        maps = heatmaps[rows]
        source_maps = source_gts = None
        if maps.ndim == 4:
            source_gts = batch.source_gts()
            if source_gts is not None and source_gts.shape[1] == maps.shape[1]:
                source_maps = maps
            else:
                source_gts = None
            maps = maps.max(axis=1)
        model_run.update(maps, batch, source_maps, source_gts)
        objectness = None
        if "objectness" in runs:
            frames = [load_frame(record) for record in batch.records]
            if any(frame is None for frame in frames):
                raise EvaluationError(f"objectness baseline: frames missing or unreadable under "
                                      f"{os.path.join(root, 'frames')} (e.g. {batch.names[frames.index(None)]}).")
            objectness = _objectness(image_encoder, normalize_images(np.stack(frames)))
        for name, run in runs.items():
            run.update(_baseline_maps(name, len(batch), rows, seed, objectness), batch)
    skipped, annotations = problems.summary()
    skipped.update({
        "heatmaps_without_record": len(unmatched),
        "records_without_heatmap": len(without_maps),
        "examples_without_record": unmatched[:5],
        "examples_without_heatmap": without_maps[:5],
    })
    source = {"heatmaps": os.path.abspath(heatmaps_npz), "settings": {"threshold": threshold}}
    return _finish(model_run, runs, root, split, protocol, out_dir, skipped, annotations, source, by_name)


def evaluate_model(
    model,
    root,
    split="test",
    protocol="vggss",
    out_dir=None,
    batch_size=16,
    baselines=True,
    frontend=None,
    resize="align_corners",
    progress=True,
    seed=0,
    max_batches=None,
    image_size=None,
    clip_seconds=None,
    image_mode=None,
    strict_median=None,
    class_conditioned=False,
    strict=False,
    objectness_encoder=None,
    audio_level_db="model",
    swap_audio=None,
    listening=False,
    threshold="median",
    records=None,
    missing=None,
    map_transform=None,
):
    """Runs the model over `make_dataset(root, split)` and evaluates its heatmaps (plus the baselines).

    Mixture protocols ("stamps-mix", "music-duet"; records with `sources`) also score one map per
    source (`metrics["model"]["multi_source"]`: per-source cIoU@0.3 / AUC, PIAP and CAP). A model
    with `localize_sources` (AVGN) localises its N most probable audio classes (N = number of sources),
    each map paired with the source of the same class when predicted (the others in order), and its
    class-aware map of each ground-truth class gives CAP. A model without it (LVS, EZ-VSL) and the
    baselines use their single map for every source and every class.

    Args:
        model: a keras-avloc model (`localize(images, audio, image_size=...)`, and `image_encoder` for the
            objectness baseline).
        root, split, protocol, out_dir: as in `evaluate_heatmaps`.
        batch_size: dataset batch size.
        baselines: also score centre prior, random maps and objectness (from `model.image_encoder`).
        frontend: audio front-end for `make_dataset`; default `model.frontend` or "lvs".
        max_batches: stop early (quick checks).
        image_size, clip_seconds, image_mode, strict_median: input size, audio length, test geometry
            ("squash" or "crop") and median rule; default: the model's `eval_settings` (what it was
            trained with, or the official settings of a ported checkpoint). Heatmaps are always
            produced at 224 x 224 for scoring.
        class_conditioned: with a `localize_sources` model (AVGN), localise the ground-truth class of each
            record (single-source protocols) or of each source (mixture protocols), the AVGN paper's test
            protocol, instead of the classes the model predicts from the audio.
        strict: stop at the first unreadable clip or ground truth (EvaluationError) instead of skipping
            and counting it.
        objectness_encoder: image encoder of the objectness baseline (default: `model.image_encoder`), e.g.
            an ImageNet (or stand-in) ResNet-18 that has not seen the benchmark.
        audio_level_db: gated RMS level (dBFS) every clip is scaled to before the front-end
            (`keras_avloc.data.audio.normalize_level`); "model" (default): the model's
            `eval_settings["audio_level_db"]` (None there: the file's own level).
        swap_audio: the listening control: an int seed gives every frame the audio of another record of another
            class (`swapped_audio_records`), scored against the frame's own ground truth. A map that follows the
            sound loses its lead over the random map; an objectness map loses nothing. None: each frame's own audio.
        listening: also run the listening control (`swap_audio` with `seed`) and report it beside the model.
        threshold, records, missing: as in `evaluate_heatmaps`.
        map_transform: optional callable (maps [B, 224, 224], images) -> maps applied to the model's single maps
            before scoring (e.g. SLAVC's saliency fusion, `keras_avloc.evaluation.extended`).

    Returns:
        the metrics dict written to `out_dir/metrics.json`.

    Example:
        >>> evaluate_model(load_model("ezvsl.keras"), "data/vggss", out_dir="runs/eval")  # doctest: +SKIP
    """
    import keras_avloc.data as data_lib

    _check_protocol(protocol)
    if out_dir is not None:
        check_output_folder(out_dir)
    settings = dict(getattr(model, "eval_settings", None) or {})
    image_size = int(image_size or settings.get("image_size") or 224)
    clip_seconds = float(clip_seconds or settings.get("clip_seconds") or 3.0)
    image_mode = image_mode or settings.get("image_mode") or "squash"
    strict_median = bool(settings.get("strict_median", False) if strict_median is None else strict_median)
    if audio_level_db == "model":
        audio_level_db = settings.get("audio_level_db")
    swapped_row = own_row = None
    if listening and swap_audio is None:
        # A class-conditioned map is told which class to draw: the control scores the maps of the classes the model
        # hears instead, with its own audio and with another class's.
        heard = class_conditioned and isinstance(model, MultiSource)
        common = dict(protocol=protocol, batch_size=batch_size, baselines=False, frontend=frontend, resize=resize,
                      progress=progress, seed=seed, max_batches=max_batches, image_size=image_size,
                      clip_seconds=clip_seconds, image_mode=image_mode, strict_median=strict_median,
                      class_conditioned=False if heard else class_conditioned, strict=strict,
                      audio_level_db=audio_level_db, threshold=threshold, records=records)
        swapped_row = evaluate_model(model, root, split=split, swap_audio=seed, **common)["model"]
        if heard:
            own_row = evaluate_model(model, root, split=split, **common)["model"]
    problems = Problems(strict)
    records = _records(root, split, records, missing, problems)
    frontend = frontend or getattr(model, "frontend", None) or "lvs"
    inputs = records if swap_audio is None else swapped_audio_records(records, swap_audio)
    settings = data_lib.InputSettings(frontend=frontend, image_size=image_size, clip_seconds=clip_seconds,
                                      image_mode=image_mode, audio_level_db=audio_level_db)
    dataset = data_lib.make_dataset(root, split=split, inputs=settings, training=False, batch_size=batch_size,
                                    on_error="skip", records=inputs, ground_truth=False)
    unreadable = getattr(dataset, "skipped", None)
    multi = PROTOCOLS[protocol]["multi"]
    vocabulary = list(getattr(model, "class_names", None) or getattr(dataset, "class_list", None) or [])
    without_sources = 0
    encoder = objectness_encoder if objectness_encoder is not None else getattr(model, "image_encoder", None)
    baseline_names = ["center", "random"] + (["objectness"] if encoder is not None else [])
    model_run = _Run(protocol, resize, keep_maps=True, strict_median=strict_median, threshold=threshold)
    runs = ({name: _Run(protocol, resize, False, strict_median, threshold) for name in baseline_names}
            if baselines else {})
    total = -(-len(records) // batch_size)
    if max_batches is not None:
        total = min(total, max_batches)
    reported = set()
    for batch_number, (x, y) in enumerate(_progress(dataset, total, "evaluate", progress)):
        if unreadable is not None:
            for name, reason in list(unreadable.reasons.items()):
                if name not in reported:
                    reported.add(name)
                    problems.skip("unreadable_clips", name, reason)
        if max_batches is not None and batch_number >= max_batches:
            break
        indices = np.asarray(y["index"]).reshape(-1)
        batch = _Batch([records[int(i)] for i in indices], protocol, problems)
        if not len(batch):
            continue
        keep = np.asarray(batch.keep)
        images, audio = np.asarray(x["image"])[keep], np.asarray(x["audio"])[keep]
        if class_conditioned and not multi and isinstance(model, MultiSource):
            index = {name: position for position, name in enumerate(vocabulary)}
            truth = np.array([index.get(record.get("class"), -1) for record in batch.records], np.int32)
            maps = np.asarray(model.localize(images, audio, image_size=(GT_SIZE, GT_SIZE), class_ids=truth),
                              dtype=np.float32)
        else:
            maps = np.asarray(model.localize(images, audio, image_size=(GT_SIZE, GT_SIZE)), dtype=np.float32)
        if map_transform is not None:
            maps = np.asarray(map_transform(maps, images), dtype=np.float32)
        source_gts = class_ids = None
        if multi:
            source_gts = batch.source_gts()
            if source_gts is not None:
                index = {name: position for position, name in enumerate(vocabulary)}
                class_ids = np.array([[index.get(s.get("class"), -1) for s in r["sources"]] for r in batch.records],
                                     dtype=np.int32)
            else:
                without_sources += len(batch)
        if source_gts is not None:
            source_maps, class_maps = mixture_maps(model, images, audio, class_ids, maps, class_conditioned)
            model_run.update(maps, batch, source_maps, source_gts, class_maps, class_ids)
        else:
            model_run.update(maps, batch)
        objectness = _objectness(encoder, images) if "objectness" in runs else None
        for name, run in runs.items():
            base = _baseline_maps(name, len(batch), indices[keep], seed, objectness)
            if source_gts is not None:
                repeated = np.repeat(base[:, None], source_gts.shape[1], axis=1)
                run.update(base, batch, repeated, source_gts, repeated, class_ids)
            else:
                run.update(base, batch)
    if unreadable is not None:  # failures in the last batches
        for name, reason in unreadable.reasons.items():
            if name not in reported:
                problems.skip("unreadable_clips", name, reason)
    source = {"model": getattr(model, "name", type(model).__name__),
              "settings": {"image_size": image_size, "clip_seconds": clip_seconds, "image_mode": image_mode,
                           "strict_median": strict_median, "audio_level_db": audio_level_db, "threshold": threshold}}
    if swap_audio is not None:
        source["audio"] = f"another class's clip (listening control, seed {int(swap_audio)})"
    if class_conditioned and isinstance(model, MultiSource):
        source["classes"] = "ground truth (class-conditioned protocol)"
    if multi:
        source["per_source_maps"] = (("ground-truth classes" if class_conditioned else "predicted classes")
                                     if isinstance(model, MultiSource) else "single map for every source")
    skipped, annotations = problems.summary()
    if without_sources:
        skipped["samples_without_per_source_scores"] = without_sources
    extra = {} if swapped_row is None else {"listening": listening_summary(
        own_row or model_run.evaluator.result(), swapped_row,
        runs["random"].evaluator.result() if "random" in runs else None)}
    if own_row is not None:
        extra["listening"]["maps"] = "predicted classes (a class-conditioned map is told which class to draw)"
        extra["heard_classes"] = own_row  # the same metrics with the classes the model predicts from the audio
    return _finish(model_run, runs, root, split, protocol, out_dir, skipped, annotations, source,
                   {record["file"]: record for record in records}, extra)


def results_table(metrics):
    """A Markdown table with the model and every baseline (rows) and the headline metrics (columns)."""
    rows = [("model", metrics["model"])] + list(metrics.get("baselines", {}).items())
    if metrics.get("listening"):
        rows.insert(1, ("model, another class's audio", metrics["listening"]))
    columns = [("cIoU@0.5", "ciou@0.5"), ("AUC", "auc"), ("mean cIoU", "mean_ciou"), ("pointing", "pointing_game")]
    if any("mask_iou" in row for _, row in rows):
        columns.append(("mask IoU", "mask_iou"))
    lines = ["| method | " + " | ".join(title for title, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows:
        cells = [f"{row[key]:.4f}" if isinstance(row.get(key), float) else "-" for _, key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lost = (metrics.get("listening") or {}).get("margin_lost")
    if lost is not None:
        lines.append(f"\nListening control: another class's audio takes {lost:.0%} of the model's AUC margin over the "
                     "random map away (0%: the map ignores the audio).")
    return "\n".join(lines)


def _finish(model_run, runs, root, split, protocol, out_dir, skipped, annotations, source, by_name, extra=None):
    evaluator = model_run.evaluator
    if len(evaluator) == 0:
        reasons = "; ".join(f"{category}: {count}" for category, count in skipped.items()
                            if isinstance(count, int) and count)
        raise EvaluationError(f"no samples of {root} split {split!r} could be evaluated"
                              + (f" ({reasons}; see the reasons above or rerun with --strict)" if reasons else "."))
    metrics = {
        "protocol": protocol,
        "ground_truth": PROTOCOL_GT_RULES[protocol],
        "root": os.path.abspath(root),
        "split": split,
        "source": source,
        "model": evaluator.result(),
        "baselines": {name: run.evaluator.result() for name, run in runs.items()},
        "skipped": skipped,
        "annotations": annotations,
        **(extra or {}),
    }
    metrics["table"] = results_table(metrics)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        metrics["files"] = _write_plots(model_run, by_name, out_dir, metrics)
        per_sample_path = os.path.join(out_dir, "per_sample.json")
        write_json(per_sample_path, evaluator.per_sample(), indent=2)
        metrics["files"]["per_sample"] = per_sample_path
        write_json(os.path.join(out_dir, "metrics.json"), metrics, indent=2)
    return metrics


def _write_plots(model_run, by_name, out_dir, metrics, per_side=4):
    from keras_avloc.viz.figures import heatmap_grid, success_curve_figure

    written = {}
    curves = {}
    for name, result in [("model", metrics["model"])] + list(metrics["baselines"].items()):
        if "success_curve" in result:
            curves[name] = (SUCCESS_THRESHOLDS, result["success_curve"]["fraction"], result["auc"])
    if curves:
        path = os.path.join(out_dir, "success_curve.png")
        success_curve_figure(curves, path=path, title=f"Success curve ({metrics['protocol']}, {metrics['split']})")
        written["success_curve"] = path
    samples = model_run.evaluator.per_sample()
    candidates = [i for i, s in enumerate(samples) if s["has_object"]]
    if candidates and model_run.small_maps:
        small = np.concatenate(model_run.small_maps)
        order = sorted(candidates, key=lambda i: samples[i]["ciou"])
        worst = order[:per_side]
        best = [i for i in order[::-1][:per_side] if i not in worst]
        chosen = best + worst
        images = [load_frame(by_name.get(samples[i]["name"], {})) for i in chosen]
        path = os.path.join(out_dir, "best_worst.png")
        heatmap_grid(
            images,
            [small[i] for i in chosen],
            [samples[i]["ciou"] for i in chosen],
            names=[("best " if i in best else "worst ") + samples[i]["name"] for i in chosen],
            path=path,
            title="Best (top row) and worst (bottom row) cIoU",
            columns=per_side,
        )
        written["best_worst"] = path
    return written
