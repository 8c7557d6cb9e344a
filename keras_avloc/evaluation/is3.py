"""IS3 protocol: two sounding objects per image, each localised from its own audio (`keras_avloc.metrics.interactive`).

Runs on the official IS3 download (`keras_avloc.data.protocols.is3_records`) or on a split of entries that share
frames (`avloc data pairs --per-source`: each source of a stamps mixture with its own recording). A map that
ignores the audio draws the same map for both objects of an image, so it finds at most one of them: iIoU and iAUC
measure listening. The centre prior, random maps and objectness are scored beside the model.

Maps: the model's `localize` at 224 x 224 (its own upsampling), or saved maps resized with `resize` (the official
IS3 script: bilinear, aligned corners, for LVS, EZ-VSL, SLAVC and FNAC). Ground truth: the entry's box, filled with
exclusive ends (official IS3 pixel boxes exactly), or its mask with `ground_truth="mask"` (the seg list).

Example:
>>> metrics = evaluate_is3(model, "datasets/stamps", load_split("datasets/stamps", "test_mix_is3"))  # doctest: +SKIP
>>> print(is3_results_table(metrics))  # doctest: +SKIP
"""

import numpy as np

from keras_avloc.evaluation.report import (EvaluationError, Problems, _baseline_maps, _objectness, load_heatmaps_npz)
from keras_avloc.evaluation.runner import model_inputs, resolve_settings, write_outputs
from keras_avloc.io import media
from keras_avloc.metrics import GT_SIZE, box_gt_map, resize_maps
from keras_avloc.metrics.interactive import is3_cious, is3_table

TABLE_COLUMNS = (("cIoU@0.5", "ciou@0.5"), ("AUC", "auc"), ("iIoU@0.5", "iiou@0.5"), ("iAUC", "iauc"),
                 ("cIoU@0.5 adap", "ciou_adap@0.5"), ("AUC adap", "auc_adap"), ("iIoU@0.5 adap", "iiou_adap@0.5"),
                 ("iAUC adap", "iauc_adap"))


def group_key(record):
    """The image an entry belongs to: its `group`, else the frame it shows (`frame_id`), else its own file."""
    return str(record.get("group") or record.get("frame_id") or record["file"])


def entry_ground_truth(record, ground_truth="box"):
    """[224, 224] binary ground truth of an entry: official pixel boxes (exclusive ends), normalised boxes
    (`box_gt_map`), or the mask."""
    if ground_truth == "mask":
        if not record.get("mask"):
            raise media.MediaError(f"{record['file']}: no mask (the mask ground truth needs one per entry)")
        return media.read_mask(record["mask"], GT_SIZE).astype(np.float32)
    if record.get("pixel_boxes") is not None:
        gt = np.zeros((GT_SIZE, GT_SIZE), np.float32)
        for x1, y1, x2, y2 in np.asarray(record["pixel_boxes"]).reshape(-1, 4):
            gt[max(int(y1), 0):int(y2), max(int(x1), 0):int(x2)] = 1.0
        return gt
    return box_gt_map(record.get("boxes"), GT_SIZE)


class _Rows:
    """Per-entry cIoUs of one map source (the model or a baseline)."""

    def __init__(self):
        self.names, self.groups, self.median, self.adaptive = [], [], [], []

    def update(self, maps, gts, records):
        median, adaptive = is3_cious(maps, gts)
        self.names += [r["file"] for r in records]
        self.groups += [group_key(r) for r in records]
        self.median += median.tolist()
        self.adaptive += adaptive.tolist()

    def table(self):
        return is3_table(self.median, self.adaptive, self.groups)


def evaluate_is3(model, root, records, missing=None, heatmaps=None, out_dir=None, batch_size=16, baselines=True,
                 progress=True, strict=False, resize="align_corners", ground_truth="box", seed=0,
                 objectness_encoder=None, **settings):
    """Scores IS3 entries: the model's maps (or saved `heatmaps`) and the no-learning baselines.

    Args:
        model: a keras-avloc model (None with `heatmaps`).
        root: dataset root; records: the entries (`is3_records`, or `load_split` of a per-source split);
        missing: {entry: reason} of listed entries without media (counted and named; an error with `strict`).
        heatmaps: an .npz of saved maps (`files`, `heatmaps`), resized to 224 with `resize`.
        ground_truth: "box" (the official protocol) or "mask".
        objectness_encoder: the objectness baseline's encoder (default the model's image encoder; none for heatmaps).
        **settings: image_size, clip_seconds, image_mode, audio_level_db (`resolve_settings`).

    Returns:
        dict written to metrics.json: {"protocol": "is3", "model": `is3_table`, "baselines": {...}, "skipped"}.
    """
    if ground_truth not in ("box", "mask"):
        raise ValueError(f"ground_truth must be 'box' or 'mask', got {ground_truth!r}")
    problems = Problems(strict)
    for name, reason in (missing or {}).items():
        problems.skip("listed_without_media", name, reason)
    runs = {"model": _Rows()}
    encoder = objectness_encoder if objectness_encoder is not None else getattr(model, "image_encoder", None)
    names = ["center", "random"] + (["objectness"] if encoder is not None and heatmaps is None else [])
    runs.update({name: _Rows() for name in names} if baselines else {})
    for positions, maps, images in _batches(model, root, records, heatmaps, batch_size, problems, progress, resize,
                                            settings):
        kept, gts = [], []
        for position in positions:
            try:
                gts.append(entry_ground_truth(records[position], ground_truth))
                kept.append(position)
            except media.MediaError as err:
                problems.skip("ground_truth_errors", records[position]["file"], err)
        if not kept:
            continue
        rows = np.searchsorted(positions, kept) if len(kept) != len(positions) else slice(None)
        batch, gts = [records[i] for i in kept], np.stack(gts)
        runs["model"].update(maps[rows], gts, batch)
        objectness = _objectness(encoder, images[rows]) if "objectness" in runs else None
        for name in names if baselines else []:
            runs[name].update(_baseline_maps(name, len(kept), kept, seed, objectness), gts, batch)
    if not runs["model"].names:
        raise EvaluationError(f"no IS3 entry under {root} could be scored ({problems.summary()[0]}).")
    skipped, _ = problems.summary()
    metrics = {"protocol": "is3", "ground_truth": ground_truth, "model": runs["model"].table(),
               "baselines": {name: runs[name].table() for name in names if name in runs}, "skipped": skipped,
               "source": {"heatmaps": heatmaps} if heatmaps else {"model": getattr(model, "name", "model"),
                                                                  "settings": resolve_settings(model, **settings)}}
    rows = runs["model"]
    per_sample = [{"name": n, "image": g, "ciou": m, "ciou_adap": a}
                  for n, g, m, a in zip(rows.names, rows.groups, rows.median, rows.adaptive)]
    return write_outputs(out_dir, metrics, per_sample)


def _batches(model, root, records, heatmaps, batch_size, problems, progress, resize, settings):
    """(positions, [B, 224, 224] maps, images or None) over the entries, from the model or from saved maps."""
    if heatmaps is None:
        resolved = resolve_settings(model, **settings)
        for positions, images, audio in model_inputs(model, root, records, resolved, batch_size, problems, progress,
                                                     "IS3"):
            maps = np.asarray(model.localize(images, audio, image_size=(GT_SIZE, GT_SIZE)), np.float32)
            yield positions, maps, images
        return
    files, maps = load_heatmaps_npz(heatmaps)
    row_of = {str(name): row for row, name in enumerate(files)}
    present = []
    for position, record in enumerate(records):
        if record["file"] in row_of:
            present.append(position)
        else:
            problems.skip("records_without_heatmap", record["file"], f"not in {heatmaps}")
    for start in range(0, len(present), batch_size):
        chunk = np.asarray(present[start:start + batch_size])
        rows = [row_of[records[i]["file"]] for i in chunk]
        yield chunk, resize_maps(maps[rows], GT_SIZE, resize).astype(np.float32), None


def is3_results_table(metrics):
    """A Markdown table: the model and the baselines (rows), IS3's columns."""
    rows = [("model", metrics["model"])] + list(metrics.get("baselines", {}).items())
    lines = ["| method | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
             "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, row in rows:
        lines.append(f"| {name} | " + " | ".join(f"{row[key]:.4f}" for _, key in TABLE_COLUMNS) + " |")
    model = metrics["model"]
    lines.append(f"\n{model['num_entries']} entries on {model['num_images']} images "
                 f"({'/'.join(map(str, model['entries_per_image']))} per image); ground truth: {metrics['ground_truth']}")
    return "\n".join(lines)
