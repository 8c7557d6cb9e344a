"""The class-aware protocol ("stamps-classes"): which object sounds, scored per class (CSOL's `eval.py` and
`eval_duet.py`, GeWu-Lab/CSOL_TPAMI2021).

1. Cluster -> class assignment, fitted on a labelled split of single-source scenes (default "val"): each
   clip's cluster is the argmax of the frozen stage-one audio classifier (`model.cluster_probabilities`;
   `assign_by="visual"`: the dictionary entry nearest to its object feature, `model.cluster_ids`); the
   confusion C[c, k] = fraction of class c's clips in cluster k is matched by `keras_avloc.metrics.match_clusters`
   ("hungarian" by default, or the official "many-to-one"). A class's map is the sum of its clusters' maps.
2. On a split whose records list `objects` (mosaics, duets): every sounding object's class map is scored
   against that object's box (the official ground truth) and its exact mask with `ratio_ciou`, binarised at
   0.5 x max on mosaics (`eval.py`) and 0.2 x max on duets (`eval_duet.py`); a sample's cIoU is the mean over
   its sounding objects; AUC = `success_curve_area` over the samples (thresholds 0:0.05:1), cIoU@0.3 and
   @0.5 are the official `results[6]` and `results[10]`. NSA = fraction of pixels <= 0.2 in the maps of the
   visible-but-silent objects' classes (the official script averages over every non-sounding cluster,
   visible or not). Every sample is scored (the official test loop stops after one batch).
3. Models without class maps (LVS, EZ-VSL) and the baselines use one min-max normalised map for every class;
   a model with `localize(..., class_ids=...)` (AVGN) gives each object's class its own map.
4. IEr's interference protocol ("stamps-interference", `evaluate_interference`) scores the interference scenes per
   scenario and adds off-screen NSA, the same share for the classes that are heard but not in the frame.
"""

import os

import numpy as np

from keras_avloc.evaluation.report import EvaluationError, _baseline_maps, _progress, _records
from keras_avloc.io import media
from keras_avloc.io.files import check_output_folder, write_json
from keras_avloc.metrics.groundtruth import GT_SIZE, ground_truth_map
from keras_avloc.metrics.localization import success_curve, success_curve_area
from keras_avloc.metrics.multisource import match_clusters, ratio_ciou
from keras_avloc.models.contract import ClassAware, MultiSource

PROTOCOL = "stamps-classes"
KIND_RATIOS = {"mosaic": 0.5, "duet": 0.2, "mixture": 0.2, "interference": 0.2}
"""Binarisation ratio of each scene kind (official: `eval.py` synthetic 0.5, `eval_duet.py` real duets 0.2)."""
SILENT_LEVEL = 0.2
FIGURE_SAMPLES = 4


def _minmax(maps):
    maps = np.asarray(maps, np.float64)
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - low) / np.maximum(high - low, 1e-12)


def _dataset(model, root, split, records, batch_size, clip_seconds=None, image_size=None):
    import keras_avloc.data as data_lib

    changes = {key: value for key, value in (("image_size", image_size), ("clip_seconds", clip_seconds)) if value}
    return data_lib.make_dataset(root, split=split, inputs=data_lib.InputSettings.for_model(model, **changes),
                                 training=False, batch_size=batch_size, on_error="skip", records=records,
                                 ground_truth=False)


def fit_assignment(model, root, split, class_list, rule="hungarian", batch_size=16, progress=True, max_batches=None,
                   assign_by="audio"):
    """Fits the cluster -> class assignment on a labelled split (see the module docstring).

    Args:
        assign_by: "audio" (default: argmax of `model.cluster_probabilities`, the frozen stage-one audio
            classifier) or "visual" (each clip's object feature -> nearest dictionary entry, `model.cluster_ids`,
            like the official `kmeans.predict` on object features). Chosen on val_mosaic of the stamps demo
            build: purity 0.64 by audio against 0.18 by the stage-two visual features, which drift from the
            stage-one dictionary while stage two trains.

    Returns:
        dict with "assignment" int [C, K], "confusion" [C, K], "purity" (share of clips in their cluster's
        majority class), "nmi" and "clips".
    """
    from sklearn.metrics import normalized_mutual_info_score

    records = _records(root, split)
    index = {name: position for position, name in enumerate(class_list)}
    dataset = _dataset(model, root, split, records, batch_size)
    clusters, labels = [], []
    total = -(-len(records) // batch_size)
    for number, (x, y) in enumerate(_progress(dataset, total, f"assign clusters ({split})", progress)):
        if max_batches is not None and number >= max_batches:
            break
        if assign_by == "visual":
            clusters.append(np.asarray(model.cluster_ids(x["image"], x["audio"])))
        else:
            clusters.append(np.argmax(np.asarray(model.cluster_probabilities(x["audio"])), axis=1))
        labels.append([index.get(records[int(i)]["class"], -1) for i in np.asarray(y["index"]).reshape(-1)])
    clusters, labels = np.concatenate(clusters), np.concatenate(labels)
    keep = labels >= 0
    if not keep.any():
        raise EvaluationError(f"{os.path.join(root, split + '.json')}: no clip has a class of {class_list[:5]}...; "
                              "the assignment split needs labelled single-source clips (e.g. --assign-split val).")
    clusters, labels = clusters[keep], labels[keep]
    counts = np.zeros([len(class_list), model.num_clusters])
    np.add.at(counts, (labels, clusters), 1.0)
    confusion = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    return {"assignment": match_clusters(confusion, rule), "confusion": confusion, "rule": rule,
            "purity": float(counts.max(axis=0).sum() / counts.sum()),
            "nmi": float(normalized_mutual_info_score(labels, clusters)), "clips": int(len(labels))}


def _object_truth(item):
    mask = media.read_mask(item["mask"], GT_SIZE) if item.get("mask") else None
    box = ground_truth_map("union", item.get("boxes"), None)
    return box, (None if mask is None else np.asarray(mask, np.float64) > 0.5)


def _scored_classes(record):
    """The classes whose maps a scene scores: its visible objects', then those heard off screen."""
    names = [item["class"] for item in record.get("objects") or []]
    return names + [source["class"] for source in record.get("sources") or []
                    if source.get("offscreen") and source["class"] not in names]


class _Scores:
    def __init__(self):
        self.box, self.mask, self.silent, self.offscreen, self.names = [], [], [], [], []

    def add(self, name, kind, maps_of, objects, truths, offscreen=()):
        ratio = KIND_RATIOS.get(kind, 0.5)
        box_values, mask_values, silent_values = [], [], []
        offscreen_values = [float(np.mean(maps_of(class_name) <= SILENT_LEVEL)) for class_name in offscreen]
        for item, (box, mask) in zip(objects, truths):
            class_map = maps_of(item["class"])
            if item["sounding"]:
                box_values.append(float(ratio_ciou(class_map, box, ratio)))
                if mask is not None:
                    mask_values.append(float(ratio_ciou(class_map, mask, ratio)))
            else:
                silent_values.append(float(np.mean(class_map <= SILENT_LEVEL)))
        if not box_values:
            return
        self.names.append(name)
        self.box.append(float(np.mean(box_values)))
        self.mask.append(float(np.mean(mask_values)) if mask_values else np.nan)
        self.silent.append(float(np.mean(silent_values)) if silent_values else np.nan)
        self.offscreen.append(float(np.mean(offscreen_values)) if offscreen_values else np.nan)

    def result(self):
        box = np.asarray(self.box)
        mask = np.asarray(self.mask)
        mask = mask[~np.isnan(mask)]
        silent = np.asarray(self.silent)
        silent = silent[~np.isnan(silent)]
        offscreen = np.asarray(self.offscreen)
        offscreen = offscreen[~np.isnan(offscreen)]
        curve = success_curve(box) if len(box) else np.zeros(21)
        return {"samples": int(len(box)), "class_ciou_auc": success_curve_area(box) if len(box) else float("nan"),
                "class_ciou@0.3": float(curve[6]), "class_ciou@0.5": float(curve[10]),
                "mean_class_ciou": float(box.mean()) if len(box) else float("nan"),
                "mask_class_ciou_auc": success_curve_area(mask) if len(mask) else float("nan"),
                "nsa": float(silent.mean()) if len(silent) else float("nan"),
                "offscreen_nsa": float(offscreen.mean()) if len(offscreen) else float("nan")}


def evaluate_classes(model, root, split="test_mosaic", assign_split="val", rule="hungarian", out_dir=None,
                     batch_size=16, baselines=True, progress=True, max_batches=None, seed=0, assign_by="audio",
                     group_by=None, protocol=PROTOCOL, class_maps_options=None):
    """Scores class-aware localisation (the "stamps-classes" protocol of the module docstring).

    Args:
        model: a keras-avloc model; with `localize_classes` and `cluster_probabilities` (CSOL stage two) its
            class maps are scored, otherwise its class-agnostic (or AVGN's class-conditioned) maps.
        root: dataset folder; split: a split whose records list `objects` (test_mosaic, test_duet).
        assign_split: labelled single-source split for the cluster -> class assignment.
        rule: "hungarian" or "many-to-one" (`keras_avloc.metrics.match_clusters`).
        assign_by: "visual" or "audio" clusters of the assignment clips (see `fit_assignment`).
        out_dir: write metrics.json and `class_maps_N.png` (the first scenes: each sounding class's map in its
            own colour, the silent objects dashed) there (None: do not write).
        batch_size, progress, max_batches: the evaluation loop.
        baselines: also score the centre prior and random maps (one map for every class).
        seed: random-map seed.
        group_by: also score each value of this record field apart ("scenario": the interference protocol),
            under metrics["groups"][value].
        protocol: the protocol name written to the metrics.
        class_maps_options: keyword arguments of the model's `localize_classes` (IEr's filter switches).

    Returns:
        dict {"protocol", "split", "classes", "model": scores, "center": ..., "random": ..., "assignment": ...};
        scores hold "class_ciou_auc", "class_ciou@0.3", "class_ciou@0.5", "mean_class_ciou",
        "mask_class_ciou_auc", "nsa" and "samples".
    """
    from keras_avloc.data.annotations import class_names

    if out_dir is not None:
        check_output_folder(out_dir)
    records = _records(root, split)
    if not any(record.get("objects") for record in records):
        raise EvaluationError(f"{os.path.join(root, split + '.json')} lists no 'objects' (class, bbox, mask, "
                              "sounding) per scene; the class-aware protocol needs mosaic or duet scenes, e.g. "
                              "`avloc data stamps --n-test-mosaic 300 --n-test-duet 300`.")
    class_list = class_names(root)
    index = {name: position for position, name in enumerate(class_list)}
    class_aware = isinstance(model, ClassAware)
    assignment = None
    if class_aware:
        assignment = fit_assignment(model, root, assign_split, class_list, rule, batch_size, progress, max_batches,
                                    assign_by)
    vocabulary = list(getattr(model, "class_names", None) or [])
    conditioned = isinstance(model, MultiSource) and bool(vocabulary)
    runs = {"model": _Scores()}
    if baselines:
        runs.update(center=_Scores(), random=_Scores())
    groups = {}
    dataset = _dataset(model, root, split, records, batch_size)
    total = -(-len(records) // batch_size)
    size = (GT_SIZE, GT_SIZE)
    figure_samples = []  # (image, sounding class maps, names, silent boxes) of the first scenes
    for number, (x, y) in enumerate(_progress(dataset, total, f"evaluate classes ({split})", progress)):
        if max_batches is not None and number >= max_batches:
            break
        positions = np.asarray(y["index"]).reshape(-1)
        batch = [records[int(i)] for i in positions]
        images, audio = np.asarray(x["image"]), np.asarray(x["audio"])
        if class_aware:
            cluster_maps = np.asarray(model.localize_classes(images, audio, image_size=size,
                                                             **(class_maps_options or {})), np.float64)
            class_maps = np.einsum("ck,bkhw->bchw", assignment["assignment"].astype(np.float64), cluster_maps)
        else:
            agnostic = _minmax(model.localize(images, audio, image_size=size))
        per_slot = {}
        if conditioned and not class_aware:
            scored = [_scored_classes(record) for record in batch]
            vocab = {name: position for position, name in enumerate(vocabulary)}
            for slot in range(max(len(names) for names in scored)):
                ids = np.array([vocab.get(names[slot], -1) if slot < len(names) else -1 for names in scored], np.int32)
                maps = model.localize(images, audio, image_size=size, class_ids=np.maximum(ids, 0))
                per_slot[slot] = np.where((ids >= 0)[:, None, None], _minmax(maps), agnostic)
        baseline = {name: _baseline_maps(name, len(batch), positions, seed) for name in runs if name != "model"}
        for row, record in enumerate(batch):
            objects = record.get("objects") or []
            if not objects:
                continue
            truths = [_object_truth(item) for item in objects]
            if class_aware:
                def model_map(name, row=row):
                    position = index.get(name)
                    return class_maps[row, position] if position is not None else np.zeros(size)
            elif per_slot:
                slot_of = {name: slot for slot, name in enumerate(_scored_classes(record))}

                def model_map(name, row=row, slot_of=slot_of):
                    return per_slot[slot_of[name]][row]
            else:
                def model_map(name, row=row):
                    return agnostic[row]
            offscreen = [source["class"] for source in record.get("sources") or [] if source.get("offscreen")]
            targets = [runs]
            if group_by is not None:
                key = str(record.get(group_by))
                if key not in groups:
                    groups[key] = {name: _Scores() for name in runs}
                targets.append(groups[key])
            for target in targets:
                target["model"].add(record["file"], record.get("kind"), model_map, objects, truths, offscreen)
            if out_dir is not None and len(figure_samples) < FIGURE_SAMPLES:
                sounding = [item for item in objects if item["sounding"]]
                figure_samples.append((images[row], np.stack([model_map(item["class"]) for item in sounding]),
                                       [item["class"] for item in sounding],
                                       [(item["class"], item["boxes"][0]) for item in objects
                                        if not item["sounding"] and len(item["boxes"])]))
            for name, maps in baseline.items():
                normalised = _minmax(maps[row])
                for target in targets:
                    target[name].add(record["file"], record.get("kind"), lambda _c, m=normalised: m, objects, truths,
                                     offscreen)
    metrics = {"protocol": protocol, "split": split, "classes": class_list,
               "maps": ("class maps (clusters assigned on %s, %s)" % (assign_split, rule)) if class_aware else
               ("class-conditioned maps" if per_slot or conditioned else "one class-agnostic map for every class")}
    for name, scores in runs.items():
        metrics[name] = scores.result()
    if group_by is not None:
        metrics["groups"] = {key: {name: scores.result() for name, scores in value.items()}
                             for key, value in sorted(groups.items())}
    if assignment is not None:
        metrics["assignment"] = {"rule": rule, "split": assign_split, "by": assign_by, "purity": assignment["purity"],
                                 "nmi": assignment["nmi"], "clips": assignment["clips"],
                                 "clusters_of_class": {class_list[c]: np.nonzero(assignment["assignment"][c])[0].tolist()
                                                       for c in range(len(class_list))}}
    if out_dir is not None:
        write_json(os.path.join(out_dir, "metrics.json"), metrics)
        _write_figures(out_dir, figure_samples)
    return metrics


def _write_figures(out_dir, samples):
    """out_dir/class_maps_N.png: each sounding class's map in its own colour, silent objects dashed."""
    from keras_avloc.io.imagenet import denormalize_images
    from keras_avloc.viz.figures import class_colour_figure

    for number, (image, maps, names, silent) in enumerate(samples):
        class_colour_figure(denormalize_images(image[None])[0], maps, names, silent_boxes=silent,
                            path=os.path.join(out_dir, f"class_maps_{number}.png"))


def classes_table(metrics):
    """The class-aware results as a text table (model and baselines)."""
    lines = [f"{'':<10}{'AUC':>8}{'cIoU@0.3':>10}{'cIoU@0.5':>10}{'mask AUC':>10}{'NSA':>8}{'samples':>9}"]
    for name in ("model", "center", "random"):
        if name in metrics:
            row = metrics[name]
            lines.append(f"{name:<10}{row['class_ciou_auc']:>8.3f}{row['class_ciou@0.3']:>10.3f}"
                         f"{row['class_ciou@0.5']:>10.3f}{row['mask_class_ciou_auc']:>10.3f}{row['nsa']:>8.3f}"
                         f"{row['samples']:>9d}")
    if "assignment" in metrics:
        a = metrics["assignment"]
        lines.append(f"clusters -> classes: {a['rule']} on {a['split']} by {a.get('by', 'audio')} clusters "
                     f"({a['clips']} clips): purity {a['purity']:.3f}, "
                     f"NMI {a['nmi']:.3f}")
    return "\n".join(lines)


INTERFERENCE_PROTOCOL = "stamps-interference"


def evaluate_interference(model, root, split="test_interf", assign_split="val", **kwargs):
    """IEr's interference protocol ("stamps-interference"): `evaluate_classes` on the interference scenes
    (`avloc data stamps --n-test-interf`), scored per scenario (volume_0db ... volume_20db, offscreen,
    silent, combined; `keras_avloc.data.stamps.INTERFERENCE_SCENARIOS`) and over all of them.

    Beside the class-aware AUC / cIoU and NSA (visible but silent objects), "offscreen_nsa" is the share of
    pixels <= 0.2 in the maps of the classes that are heard but not in the frame (higher is better). A class the
    assignment gives no cluster has an empty map, so its NSA is 1 (with K >= the class count, Hungarian matching
    gives every class a cluster).

    Args:
        model, root, split, assign_split: as `evaluate_classes`; **kwargs: its other arguments.

    Returns:
        The `evaluate_classes` metrics with "groups" {scenario: {"model": ..., "center": ..., "random": ...}}.
    """
    records = _records(root, split)
    if not any(record.get("scenario") for record in records):
        raise EvaluationError(f"{os.path.join(root, split + '.json')} has no interference scenes (records with "
                              "'scenario'); build them with `avloc data stamps --n-val-interf 140 --n-test-interf "
                              "280` (same --out, the other splits are kept).")
    return evaluate_classes(model, root, split, assign_split, group_by="scenario", protocol=INTERFERENCE_PROTOCOL,
                            **kwargs)


def interference_table(metrics, columns=("class_ciou_auc", "nsa", "offscreen_nsa")):
    """Per-scenario rows (model, centre, random) of `evaluate_interference` metrics as a text table."""
    names = [name for name in ("model", "center", "random") if name in metrics]
    short = {"class_ciou_auc": "AUC", "nsa": "NSA", "offscreen_nsa": "offNSA"}
    header = f"{'scenario':<14}" + "".join(f"{name + ' ' + short.get(column, column):>16}" for name in names
                                            for column in columns)
    lines = [header]
    groups = dict(metrics.get("groups", {}))
    groups["all"] = {name: metrics[name] for name in names}
    for key, rows in groups.items():
        cells = []
        for name in names:
            for column in columns:
                value = rows[name].get(column, float("nan"))
                cells.append(f"{value:>16.3f}")
        lines.append(f"{key:<14}" + "".join(cells))
    return "\n".join(lines)
