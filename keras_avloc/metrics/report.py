"""End-to-end evaluation: saved heatmaps or a model → metrics.json, success-curve plot, best/worst grid.

`evaluate_heatmaps` needs only numpy/OpenCV/matplotlib (no TensorFlow); `evaluate_model` runs a
model's `localize` over `keras_avloc.data.make_dataset`.
"""

import json
import os
import tempfile

import numpy as np

from keras_avloc.metrics.baselines import center_prior, objectness_maps, random_maps
from keras_avloc.metrics.evaluator import PROTOCOLS, Evaluator
from keras_avloc.metrics.groundtruth import read_mask, read_split, record_gt_map, record_source_gt_maps
from keras_avloc.metrics.localization import SUCCESS_THRESHOLDS, resize_maps

GRID_SIZE = 56
"""Side at which heatmaps are kept for the best/worst grid (keeps memory small on 5,000+ samples)."""

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _progress(iterable, total, description, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=description, unit="batch")


def write_json(path, payload):
    """Writes JSON atomically (temporary file + os.replace)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp_", suffix=".json", dir=directory)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=2, default=_json_default)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def load_heatmaps_npz(path):
    """Reads a heatmaps file: `files` (str [N]) and `heatmaps` ([N, h, w] or [N, K, h, w] per source)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found; pass the .npz written by `avloc localize` or np.savez.")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in ("files", "heatmaps") if key not in data.files]
            if missing:
                raise ValueError(
                    f"{path} lacks {missing}; save it with np.savez(path, files=np.array(names), heatmaps=maps)."
                )
            files = [str(name) for name in data["files"]]
            heatmaps = np.asarray(data["heatmaps"], dtype=np.float32)
    except (OSError, ValueError) as err:
        if isinstance(err, ValueError) and "lacks" in str(err):
            raise
        raise ValueError(f"{path} is not a readable .npz file ({err}); re-save it with np.savez.") from err
    if heatmaps.ndim not in (3, 4) or len(heatmaps) != len(files):
        raise ValueError(
            f"{path}: heatmaps must be [N, h, w] (or [N, K, h, w]) with N = len(files) = {len(files)}, "
            f"got {heatmaps.shape}."
        )
    if not np.all(np.isfinite(heatmaps)):
        bad = sorted({files[i] for i in np.nonzero(~np.isfinite(heatmaps).reshape(len(files), -1).all(axis=1))[0]})
        raise ValueError(f"{path}: NaN/inf heatmaps for {len(bad)} files (e.g. {bad[:3]}); fix the model output.")
    return files, heatmaps


def load_frame(root, name, size=224):
    """RGB uint8 [size, size, 3] of ROOT/frames/<name>.jpg, or None when it is missing."""
    import cv2

    path = os.path.join(root, "frames", f"{name}.jpg")
    if not os.path.isfile(path):
        return None
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        return None
    return cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (size, size), interpolation=cv2.INTER_AREA)


def _record_masks(records, root, size):
    masks = []
    for record in records:
        masks.append(read_mask(root, record["mask"], size) if record.get("mask") else None)
    return masks


class _Run:
    """One evaluation (the model or a baseline): an Evaluator plus small copies of the maps."""

    def __init__(self, protocol, resize, keep_maps):
        self.evaluator = Evaluator(protocol, resize=resize)
        self.keep_maps = keep_maps
        self.small_maps = []

    def update(self, maps, gt, masks, kinds, names, source_maps=None, source_gts=None, class_maps=None,
               class_ids=None):
        self.evaluator.update(
            maps, gt, masks=masks, kinds=kinds, names=names, source_heatmaps=source_maps, source_gt_maps=source_gts,
            class_heatmaps=class_maps, class_ids=class_ids,
        )
        if self.keep_maps:
            self.small_maps.append(resize_maps(maps, GRID_SIZE).astype(np.float32))


def _baseline_runs(names, protocol, resize):
    return {name: _Run(protocol, resize, keep_maps=False) for name in names}


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

    Returns:
        dict as written to metrics.json: {"model": {...}, "baselines": {...}, "skipped": {...}, ...}.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}.")
    files, heatmaps = load_heatmaps_npz(heatmaps_npz)
    records = read_split(root, split)
    by_name = {record["file"]: record for record in records}
    matched = [i for i, name in enumerate(files) if name in by_name]
    unmatched = [name for name in files if name not in by_name]
    if not matched:
        raise ValueError(
            f"none of the {len(files)} heatmap files appear in {os.path.join(root, split + '.json')}; "
            "check --data / --split (heatmap `files` must equal the records' 'file' values)."
        )
    covered = {files[i] for i in matched}
    missing = [record["file"] for record in records if record["file"] not in covered]
    baseline_names = ["center", "random"] + (["objectness"] if image_encoder is not None else [])
    model_run = _Run(protocol, resize, keep_maps=True)
    baseline_runs = _baseline_runs(baseline_names, protocol, resize) if baselines else {}
    size = 224
    batches = [matched[start : start + batch_size] for start in range(0, len(matched), batch_size)]
    missing_masks = 0
    for batch in _progress(batches, len(batches), "evaluate", progress):
        batch_records = [by_name[files[i]] for i in batch]
        gt = np.stack([record_gt_map(r, protocol, size, root) for r in batch_records])
        try:
            masks = _record_masks(batch_records, root, size)
        except FileNotFoundError:
            masks, missing_masks = None, missing_masks + len(batch)
        kinds = [r.get("kind") for r in batch_records]
        names = [r["file"] for r in batch_records]
        maps = heatmaps[batch]
        source_maps = source_gts = None
        if maps.ndim == 4:
            source_maps = maps
            per_record = [record_source_gt_maps(r, size, root) for r in batch_records]
            if all(p is not None and len(p) == maps.shape[1] for p in per_record):
                source_gts = np.stack(per_record)
            else:
                source_maps = None
            maps = maps.max(axis=1)
        model_run.update(maps, gt, masks, kinds, names, source_maps, source_gts)
        for name, run in baseline_runs.items():
            if name == "objectness":
                images = [load_frame(root, n) for n in names]
                if any(image is None for image in images):
                    raise FileNotFoundError(
                        f"objectness baseline: missing frames under {os.path.join(root, 'frames')} for this batch."
                    )
                normalized = (np.stack(images).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
                base = objectness_maps(normalized, image_encoder, size)
            elif name == "center":
                base = center_prior(len(batch), size)
            else:
                base = np.concatenate([random_maps(1, size, seed=seed, start=int(i)) for i in batch])
            run.update(base, gt, masks, kinds, names)
    skipped = {
        "heatmaps_without_record": len(unmatched),
        "records_without_heatmap": len(missing),
        "examples_without_record": unmatched[:5],
        "examples_without_heatmap": missing[:5],
    }
    if missing_masks:
        skipped["samples_with_unreadable_masks"] = missing_masks
    source = {"heatmaps": os.path.abspath(heatmaps_npz)}
    return _finish(model_run, baseline_runs, root, split, protocol, out_dir, skipped, source)


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
    image_size=224,
    clip_seconds=3.0,
    class_conditioned=False,
):
    """Runs `model.localize` over `make_dataset(root, split)` and evaluates it (plus the baselines).

    Mixture protocols ("stamps-mix", "music-duet"; records with `sources`) also score one map per
    source (`metrics["model"]["multi_source"]`: per-source cIoU@0.3 / AUC, PIAP and CAP). A model
    with `localize_sources` (AVGN) localises its N most probable audio classes (N = number of sources),
    each map paired with the source of the same class when predicted (the others in order), and its
    class-aware map of each ground-truth class gives CAP. A model without it (LVS, EZ-VSL) and the
    baselines use their single map for every source and every class.

    Args:
        model: a keras-avloc model with `localize(images, audio) -> [B, H, W]` (and `image_encoder`
            for the objectness baseline).
        root, split, protocol, out_dir: as in `evaluate_heatmaps`.
        batch_size: dataset batch size.
        baselines: also score centre prior, random maps and objectness (from `model.image_encoder`).
        frontend: audio front-end for `make_dataset`; default `model.frontend` or "lvs".
        max_batches: stop early (quick checks).
        image_size, clip_seconds: model input size and audio length (as in training); heatmaps are
            upsampled to the ground truth's 224 × 224 before scoring.
        class_conditioned: mixture protocols with a `localize_sources` model: localise the ground-truth
            classes of the sources (the AVGN paper's protocol) instead of the predicted ones.

    Returns:
        the metrics dict written to `out_dir/metrics.json`.

    Example:
        >>> evaluate_model(load_model("ezvsl.keras"), "data/vggss", out_dir="runs/eval")  # doctest: +SKIP
    """
    from keras_avloc.data import load_split, make_dataset

    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {sorted(PROTOCOLS)}.")
    records = load_split(root, split)
    frontend = frontend or getattr(model, "frontend", None) or "lvs"
    dataset = make_dataset(root, split=split, frontend=frontend, image_size=image_size, clip_seconds=clip_seconds,
                           training=False, batch_size=batch_size)
    multi = PROTOCOLS[protocol]["multi"]
    vocabulary = list(getattr(model, "class_names", None) or getattr(dataset, "class_list", None) or [])
    without_sources = 0
    encoder = getattr(model, "image_encoder", None)
    baseline_names = ["center", "random"] + (["objectness"] if encoder is not None else [])
    model_run = _Run(protocol, resize, keep_maps=True)
    baseline_runs = _baseline_runs(baseline_names, protocol, resize) if baselines else {}
    total = -(-len(records) // batch_size)
    if max_batches is not None:
        total = min(total, max_batches)
    for batch_number, (x, y) in enumerate(_progress(dataset, total, "evaluate", progress)):
        if max_batches is not None and batch_number >= max_batches:
            break
        indices = np.asarray(y["index"]).reshape(-1)
        batch_records = [_gt_record(records[int(i)], root) for i in indices]
        gt = np.asarray(y["gt_map"], dtype=np.float32)
        if gt.shape[1] != 224:  # a model run at another size is still scored on the 224 × 224 protocol
            gt = np.stack([record_gt_map(r, protocol, 224, root) for r in batch_records]).astype(np.float32)
        masks = _record_masks(batch_records, root, gt.shape[1])
        kinds = [r.get("kind") for r in batch_records]
        names = [r["file"] for r in batch_records]
        maps = np.asarray(model.localize(x["image"], x["audio"]), dtype=np.float32)
        source_gts = class_ids = None
        if multi:
            source_gts, class_ids = _batch_sources(batch_records, vocabulary, root)
            without_sources += len(batch_records) if source_gts is None else 0
        if source_gts is not None:
            source_maps, class_maps = mixture_maps(model, x["image"], x["audio"], class_ids, maps, class_conditioned)
            model_run.update(maps, gt, masks, kinds, names, source_maps, source_gts, class_maps, class_ids)
        else:
            model_run.update(maps, gt, masks, kinds, names)
        for name, run in baseline_runs.items():
            if name == "objectness":
                base = objectness_maps(np.asarray(x["image"]), encoder, gt.shape[1])
            elif name == "center":
                base = center_prior(len(gt), gt.shape[1])
            else:
                base = np.concatenate([random_maps(1, gt.shape[1], seed=seed, start=int(i)) for i in indices])
            if source_gts is not None:
                repeated = np.repeat(base[:, None], source_gts.shape[1], axis=1)
                run.update(base, gt, masks, kinds, names, repeated, source_gts, repeated, class_ids)
            else:
                run.update(base, gt, masks, kinds, names)
    source = {"model": getattr(model, "name", type(model).__name__)}
    skipped = {}
    if multi:
        source["per_source_maps"] = ("ground-truth classes" if class_conditioned else "predicted classes") if hasattr(
            model, "localize_sources") else "single map for every source"
        if without_sources:
            skipped["samples_without_per_source_scores"] = without_sources
    return _finish(model_run, baseline_runs, root, split, protocol, out_dir, skipped, source)


def _gt_record(record, root):
    """A `load_split` record (numpy `boxes`, mask paths joined with the root) in the split-file form the
    ground-truth readers take (`bbox` lists, mask paths that resolve), for the record and its sources."""

    def convert(entry):
        out = dict(entry)
        if out.get("bbox") is None and out.get("boxes") is not None:
            out["bbox"] = np.asarray(out["boxes"], dtype=np.float64).reshape(-1, 4).tolist()
        if out.get("mask"):
            joined = os.path.join(root, out["mask"])
            out["mask"] = os.path.abspath(joined if os.path.exists(joined) else out["mask"])
        return out

    converted = convert(record)
    if record.get("sources"):
        converted["sources"] = [convert(source) for source in record["sources"]]
    return converted


def _batch_sources(records, vocabulary, root, size=224):
    """Per-source ground truth [B, K, size, size] and class ids [B, K] (-1 = not in `vocabulary`) of a batch,
    or (None, None) unless every record has the same number K >= 1 of `sources`."""
    per_record = [record_source_gt_maps(r, size, root) for r in records]
    counts = {len(p) if p is not None else 0 for p in per_record}
    if len(counts) != 1 or 0 in counts:
        return None, None
    index = {name: position for position, name in enumerate(vocabulary)}
    class_ids = np.array([[index.get(s.get("class"), -1) for s in r["sources"]] for r in records], dtype=np.int32)
    return np.stack(per_record).astype(np.float32), class_ids


def match_predicted_sources(predicted_ids, true_ids):
    """Order of the predicted source slots that pairs them with the true sources.

    A true source takes the slot that predicted its class; the remaining slots fill the remaining
    sources in their order. Only class labels are used (never the ground-truth maps).

    Args:
        predicted_ids: int [B, N] predicted classes (-1 = none); true_ids: int [B, K] with K <= N.

    Returns:
        int [B, K] slot index for every true source.
    """
    predicted_ids, true_ids = np.asarray(predicted_ids), np.asarray(true_ids)
    order = np.zeros(true_ids.shape, dtype=np.int64)
    for b in range(len(true_ids)):
        free = list(range(predicted_ids.shape[1]))
        pending = []
        for k, class_id in enumerate(true_ids[b]):
            hits = [slot for slot in free if class_id >= 0 and predicted_ids[b, slot] == class_id]
            if hits:
                order[b, k] = hits[0]
                free.remove(hits[0])
            else:
                pending.append(k)
        for k in pending:
            order[b, k] = free.pop(0)
    return order


def mixture_maps(model, images, audio, class_ids, single_maps, class_conditioned=False):
    """Per-source maps and class-indexed maps of a batch of mixtures.

    Args:
        model: a model; with `localize_sources` (AVGN) its class-aware maps are used.
        images, audio: the model inputs.
        class_ids: int [B, K] ground-truth class of every source (-1 = unknown to the model).
        single_maps: [B, H, W] the model's `localize` maps (used for every source without `localize_sources`).
        class_conditioned: localise the ground-truth classes instead of the predicted ones.

    Returns:
        (source_maps [B, K, H, W] in source order, class_maps [B, K, H, W]: the map of class
        `class_ids[b, k]`).
    """
    sources = class_ids.shape[1]
    if not hasattr(model, "localize_sources"):
        repeated = np.repeat(np.asarray(single_maps, np.float32)[:, None], sources, axis=1)
        return repeated, repeated
    class_maps = np.asarray(model.localize_sources(images, audio, class_ids=class_ids)[0], np.float32)
    if class_conditioned:
        return class_maps, class_maps
    predicted, predicted_ids, _ = model.localize_sources(images, audio, n_sources=sources, min_probability=None)
    order = match_predicted_sources(predicted_ids, class_ids)
    source_maps = np.take_along_axis(np.asarray(predicted, np.float32), order[:, :, None, None], axis=1)
    return source_maps, class_maps


def results_table(metrics):
    """A Markdown table with the model and every baseline (rows) and the headline metrics (columns)."""
    rows = [("model", metrics["model"])] + list(metrics.get("baselines", {}).items())
    columns = [("cIoU@0.5", "ciou@0.5"), ("AUC", "auc"), ("mean cIoU", "mean_ciou"), ("pointing", "pointing_game")]
    if any("mask_iou" in row for _, row in rows):
        columns.append(("mask IoU", "mask_iou"))
    lines = ["| method | " + " | ".join(title for title, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows:
        cells = [f"{row[key]:.4f}" if isinstance(row.get(key), float) else "-" for _, key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finish(model_run, baseline_runs, root, split, protocol, out_dir, skipped, source):
    evaluator = model_run.evaluator
    if len(evaluator) == 0:
        raise ValueError(f"no samples were evaluated from {root} split {split!r}.")
    metrics = {
        "protocol": protocol,
        "root": os.path.abspath(root),
        "split": split,
        "source": source,
        "model": evaluator.result(),
        "baselines": {name: run.evaluator.result() for name, run in baseline_runs.items()},
        "skipped": skipped,
    }
    metrics["table"] = results_table(metrics)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        metrics["files"] = _write_plots(model_run, baseline_runs, root, out_dir, metrics)
        per_sample_path = os.path.join(out_dir, "per_sample.json")
        write_json(per_sample_path, evaluator.per_sample())
        metrics["files"]["per_sample"] = per_sample_path
        write_json(os.path.join(out_dir, "metrics.json"), metrics)
    return metrics


def _write_plots(model_run, baseline_runs, root, out_dir, metrics, per_side=4):
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
        images = [load_frame(root, samples[i]["name"]) for i in chosen]
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
