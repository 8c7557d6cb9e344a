"""The demo's report: the heatmap figure, the tables of report.md and the targets it checks (docs/demo.md)."""

import json

from keras_avloc.demo.recipes import _recipes
from keras_avloc.io.files import atomic_output
from keras_avloc.models.contract import MultiSource

REPORT_METRICS = [("cIoU@0.5", "ciou@0.5"), ("AUC", "auc"), ("pointing game", "pointing_game"),
                  ("pointing (mask)", "mask_pointing_game"), ("mask IoU", "mask_iou")]
BASELINE_NAMES = {"center": "centre prior", "random": "random map", "objectness": "objectness (stand-in ResNet-18)"}
ORACLE_NAME = "ground-truth box (the metric's ceiling)"
TARGETS = {"auc_ratio": 1.2, "pointing": 0.6, "unseen_auc_drop": 0.10, "ood_pointing": 0.7,
           "margin_lost": 0.5}
"""The demo's targets (docs/demo.md, docs/generalisation.md): AUC >= 1.2 x the centre prior's and pointing game
>= 0.6 for every method from the stand-in (a recipe's "pointing_target" raises it: LVS >= 0.8), at most 10% relative AUC lost on val_unseen against val;
on test_ood AUC >= 1.2 x its centre prior's and pointing game >= 0.7; and another class's audio takes at least half
of every method's AUC margin over the random map, on test and test_ood."""


def heatmap_figure(models, data_root, path, preset, count=4):
    """One row per model (stand-in runs): the overlays of the first `count` test scenes, object outlined."""
    import cv2
    import numpy as np

    from keras_avloc.data import InputSettings, make_dataset
    from keras_avloc.data.annotations import load_split
    from keras_avloc.io import media
    from keras_avloc.io.imagenet import denormalize_images
    from keras_avloc.viz.figures import overlay_heatmap

    records = load_split(data_root, "test")
    batches = {}

    def batch_for(model):
        """The first test scenes with the model's own audio front-end and clip length."""
        key = (getattr(model, "frontend", "lvs"), float(model.eval_settings.get("clip_seconds") or preset["clip_seconds"]),
               model.eval_settings.get("audio_level_db"))
        if key not in batches:
            inputs = InputSettings(frontend=key[0], image_size=preset["image_size"], clip_seconds=key[1],
                                   audio_level_db=key[2])
            dataset = make_dataset(data_root, split="test", inputs=inputs, training=False, batch_size=count,
                                   ground_truth=False)
            batches[key] = next(iter(dataset))
        return batches[key]

    side = 192
    x, y = batch_for(models[0][1])
    images = [cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) for image in denormalize_images(x["image"])]
    rows = []
    for name, model in models:
        x, y = batch_for(model)
        conditioned = {"class_ids": y["label"]} if isinstance(model, MultiSource) else {}
        maps = np.asarray(model.localize(x["image"], x["audio"], image_size=(side, side), **conditioned))
        tiles = []
        for image, heatmap, index in zip(images, maps, np.asarray(y["index"])):
            tile = overlay_heatmap(image, heatmap)
            record = records[int(index)]
            if record.get("mask"):
                mask = media.read_mask(record["mask"], side).astype(np.uint8)
                contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(tile, contours, -1, (255, 255, 255), 1)
            peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
            cv2.drawMarker(tile, (int(peak[1]), int(peak[0])), (255, 0, 0), cv2.MARKER_CROSS, 14, 2)
            cv2.putText(tile, f"{name}: {record['class']}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1)
            tiles.append(tile)
        rows.append(np.concatenate(tiles, axis=1))
    grid = np.concatenate(rows, axis=0)
    with atomic_output(path, suffix=".png") as temporary:
        cv2.imwrite(temporary, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def _cell(row, key):
    value = row.get(key) if row else None
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def prompted_lines(prompted):
    """The "Sound and speech" section: prompted mAP / mIoU, retrieval recall@10 and the heads' Pred.Dis of each
    `(name, {split: evaluate_prompted metrics})`, with the centre prior, the random map and chance."""
    splits = list(prompted[0][1])
    lines = ["", "## Sound and speech (prompted segmentation, retrieval)", "",
             "DenseAV's protocols: is the object a sound (test) or a spoken prompt (test_speech: Tux Paint's real "
             "English recordings; test_speech_unseen: languages no training scene speaks) names lit up? mAP / mIoU "
             "against its exact mask; recall@10 of the matching image among the split's (audio→image / image→audio); "
             "Pred.Dis: the two heads told apart on speech against sound pairs (0.5: not at all).", "",
             "| method | " + " | ".join(f"{split} mAP / mIoU | {split} R@10" for split in splits) + " | Pred.Dis |",
             "|---" * (2 * len(splits) + 2) + "|"]
    for name, scored in prompted:
        cells = []
        for split in splits:
            model = scored[split]["model"]
            recall = model.get("retrieval") or {}
            cells += [f"{model['map']:.3f} / {model['miou']:.3f}",
                      f"{recall['audio_to_image@10']:.3f} / {recall['image_to_audio@10']:.3f}" if recall else "-"]
        heads = scored[splits[1]]["model"].get("disentanglement") if len(splits) > 1 else None
        lines.append(f"| {name} | " + " | ".join(cells) + (f" | {heads['pred_dis']:.3f} |" if heads else " | - |"))
    first = prompted[0][1]
    for key in ("center", "random"):
        cells = []
        for split in splits:
            row = first[split]["baselines"][key]
            chance = (first[split]["model"].get("retrieval") or {}).get("chance@10")
            cells += [f"{row['map']:.3f} / {row['miou']:.3f}",
                      f"{chance:.3f} (chance)" if key == "random" and chance is not None else "-"]
        lines.append(f"| {BASELINE_NAMES[key]} | " + " | ".join(cells) + " | - |")
    return lines


def report_markdown(rows, generalisation, checks, timings, settings, data_summary, standin_summary, ood_rows=(),
                    listening=(), speech_standin_summary=None, prompted=()):
    lines = ["# keras-avloc demo report", "",
             "Stamps benchmark (real photo cut-outs with their own real recordings on real background photos), "
             "test split (cIoU and AUC against the objects' boxes; pointing also against their exact masks). "
             "Every method trained with `model.fit` on the train split (CSOL and IEr: their stage one), from the "
             "ImageNet stand-in (and, with the from-scratch runs, from scratch); baselines "
             "need no learning (the objectness baseline uses the stand-in without audio). "
             "A class-aware method (AVGN) is scored on the map of each clip's ground-truth class, as its paper's test "
             "code does; its 'predicted classes' row uses the classes its audio head predicts. The last row scores "
             "the ground-truth box itself (object first, then the nearest pixels): cIoU binarises every map at its "
             "median, so on small objects even a perfect map stays far below 1.", "",
             "| method | init | " + " | ".join(title for title, _ in REPORT_METRICS) + " | AUC / centre | AUC, unseen recordings |",
             "|---" * (len(REPORT_METRICS) + 4) + "|"]
    centre = next((row for name, _, row, _ in rows if name == BASELINE_NAMES["center"]), None)
    for name, init, row, unseen in rows:
        ratio = f"{row['auc'] / centre['auc']:.2f}" if centre and row.get("auc") is not None else "-"
        cells = [_cell(row, key) for _, key in REPORT_METRICS]
        lines.append(f"| {name} | {init} | " + " | ".join(cells) + f" | {ratio} | {_cell(unseen, 'auc')} |")
    lines += ["", "## Generalisation (validation)", "",
              "val: held-out parts of the training recordings on unseen backgrounds; val_unseen: recordings "
              "training never hears (another source: the scratch package), on the same unseen backgrounds.", "",
              "| method | val AUC | val_unseen AUC | relative AUC drop | val pointing | val_unseen pointing |",
              "|---|---|---|---|---|---|"]
    for name, val, unseen in generalisation:
        drop = 1.0 - unseen["auc"] / val["auc"]
        lines.append(f"| {name} | {val['auc']:.3f} | {unseen['auc']:.3f} | {drop:+.1%} | {val['pointing_game']:.3f} "
                     f"| {unseen['pointing_game']:.3f} |")
    if ood_rows:
        centre = dict(ood_rows).get(BASELINE_NAMES["center"])
        lines += ["", "## Out of the generator (test_ood)", "",
                  "A second recipe that training never sees: other backgrounds (two other Debian packages), compositing "
                  "(drop shadows, defocus, objects cut by the border, JPEG quality 60), clip levels near -23 dBFS and "
                  "recordings no training scene uses.", "",
                  "| method | " + " | ".join(title for title, _ in REPORT_METRICS) + " | AUC / centre |",
                  "|---" * (len(REPORT_METRICS) + 2) + "|"]
        for name, row in ood_rows:
            ratio = f"{row['auc'] / centre['auc']:.2f}" if centre else "-"
            lines.append(f"| {name} | " + " | ".join(_cell(row, key) for _, key in REPORT_METRICS) + f" | {ratio} |")
    if listening:
        splits = [split for split in ("test", "test_ood") if any(split in heard for _, heard in listening)]
        lines += ["", "## Listening control", "",
                  "Every frame scored again with the audio of a scene of another class (seeded). A map that follows the "
                  "sound loses its lead over the random map; an objectness map loses none of it. A class-aware method "
                  "(AVGN) is scored here on the classes it hears, not on the ground-truth class it is told.",
                  "",
                  "| method | " + " | ".join(f"{split} AUC, own audio → another class's | share of the margin over "
                                             f"the random map lost" for split in splits) + " |",
                  "|---" * (2 * len(splits) + 1) + "|"]
        for name, heard in listening:
            cells = []
            for split in splits:
                item = heard.get(split)
                lost = item.get("margin_lost") if item else None
                cells += [f"{item['own_auc']:.3f} → {item['auc']:.3f}" if item else "-",
                          f"{lost:.0%}" if lost is not None else "-"]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if prompted:
        lines += prompted_lines(prompted)
    lines += ["", "## Targets", ""] + [f"- {line}" for line in checks]
    lines += ["", "## Settings", "", "```json", json.dumps(settings, indent=1, sort_keys=True, default=str), "```", "",
              "## Data", ""]
    for split, info in sorted(data_summary.get("splits", {}).items()):
        lines.append(f"- {split}: {info.get('scenes')} scenes")
    lines.append(f"- sounding classes ({len(data_summary.get('classes', []))}): "
                 f"{', '.join(data_summary.get('classes', []))}")
    lines.append(f"- unseen recordings: {', '.join(data_summary.get('unseen_recordings', []))}")
    if standin_summary:
        lines.append(f"- ImageNet stand-in: {standin_summary['classes']} stamp classes, {standin_summary['images']} "
                     f"images, held-out accuracy {standin_summary['val_accuracy']:.3f}")
    if speech_standin_summary:
        lines.append(f"- speech stand-in: {speech_standin_summary['words']} spoken words, "
                     f"{speech_standin_summary['clips']} clips, held-out accuracy "
                     f"{speech_standin_summary['val_accuracy']:.3f}")
    lines += ["", "## Wall time", ""] + [f"- {name}: {seconds:.0f} s" for name, seconds in timings.items()]
    lines += ["", "Figures: `heatmaps.png` (test scenes, one row per method from the stand-in; white: the sounding "
              "object's mask, red cross: the map's peak), `<run>/eval/` (success curves, best/worst grids, "
              "metrics.json).", ""]
    return "\n".join(lines)


def outside_checks(ood_rows, listening):
    """The targets of the out-of-generator split and of the listening control (`TARGETS`)."""
    checks = []
    centre = dict(ood_rows).get(BASELINE_NAMES["center"])
    for name, row in ood_rows:
        if centre is None or name in BASELINE_NAMES.values():
            continue
        ratio = row["auc"] / centre["auc"]
        checks.append(f"{name}: test_ood AUC {row['auc']:.3f} = {ratio:.2f} x centre (target >= {TARGETS['auc_ratio']}) "
                      f"{'met' if ratio >= TARGETS['auc_ratio'] else 'NOT met'}; pointing game {row['pointing_game']:.3f} "
                      f"(target >= {TARGETS['ood_pointing']}) "
                      f"{'met' if row['pointing_game'] >= TARGETS['ood_pointing'] else 'NOT met'}")
    for name, heard in listening:
        for split, item in heard.items():
            lost = item.get("margin_lost")
            met = lost is not None and lost >= TARGETS["margin_lost"]
            shown = "-" if lost is None else f"{lost:.0%}"
            checks.append(f"{name}: another class's audio takes {shown} of the {split} AUC margin over the random map "
                          f"(target >= {TARGETS['margin_lost']:.0%}) {'met' if met else 'NOT met'}")
    return checks


def _pointing_target(display):
    """The pointing-game target of the method shown as `display`: its recipe's "pointing_target", else the shared."""
    from keras_avloc.models.registry import get_method_class

    for name, recipe in _recipes().items():
        if (get_method_class(name).display_name or name) == display and "pointing_target" in recipe:
            return recipe["pointing_target"]
    return TARGETS["pointing"]


def target_checks(stand_in_rows, centre, generalisation):
    checks = []
    for name, row in stand_in_rows:
        ratio = row["auc"] / centre["auc"]
        need = _pointing_target(name)
        checks.append(f"{name}: AUC {row['auc']:.3f} = {ratio:.2f} x centre (target >= {TARGETS['auc_ratio']}) "
                      f"{'met' if ratio >= TARGETS['auc_ratio'] else 'NOT met'}; pointing game "
                      f"{row['pointing_game']:.3f} (target >= {need}) {'met' if row['pointing_game'] >= need else 'NOT met'}")
    for name, val, unseen in generalisation:
        drop = 1.0 - unseen["auc"] / val["auc"]
        checks.append(f"{name}: val_unseen loses {drop:.1%} of the val AUC (target <= {TARGETS['unseen_auc_drop']:.0%}) "
                      f"{'met' if drop <= TARGETS['unseen_auc_drop'] else 'NOT met'}")
    return checks
