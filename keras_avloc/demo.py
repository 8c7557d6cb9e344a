"""The built-in demo: stamps benchmark + ImageNet stand-in -> every method -> one table on the test split with the
no-learning baselines, the out-of-generator split and the listening control -> report.

Steps (each resumes when re-run; Ctrl-C loses at most the epoch in progress):
    1. the stamps benchmark (`keras_avloc.data.stamps`), including val_unseen / test_unseen (scenes whose
       recordings training never hears, on backgrounds it never sees) and val_ood / test_ood (a second recipe:
       other backgrounds, compositing and levels; `keras_avloc.data.stamps_variety`);
    2. the ImageNet stand-in (`keras_avloc.training.pretrain`): a ResNet-18 that recognises the stamps that
       never sound in the benchmark, stored with the data (it depends only on the media and the classes);
    3. every method from the stand-in weights, with clip levels normalised (and, with `scratch`, once more from
       scratch; CSOL and IEr: the stage the demo scores, their stage one on train; `--methods all` adds them and
       DenseAV);
    4. evaluation: test (and test_unseen, test_ood) with the stamps protocol next to the centre prior, random maps
       and the stand-in's objectness, each also with another class's audio (the listening control); val and
       val_unseen for the generalisation check;
    5. report.md, results.json and heatmaps.png.

The settings (image size, learning rate, augmentation, levels, EZ-VSL / AVGN's map resolution) were chosen on
the val and val_ood splits; test and test_ood are reported once (docs/demo.md, docs/generalisation.md).

Example:
    >>> from keras_avloc.demo import run_demo
    >>> report_path = run_demo("runs/demo", "datasets/stamps-demo")  # doctest: +SKIP
"""

import json
import os
import time
from keras_avloc.io.errors import AvlocError
from keras_avloc.io.files import atomic_output, write_json, write_text
from keras_avloc.models.contract import MultiSource
from keras_avloc.perf import resolve_precision

DEMO_CLASSES = ("chicken", "cow", "dog", "drum kit", "duck", "horse", "owl", "pig")
"""Sounding classes of the demo: eight that differ in look and sound and that each have at least two
distinct real recordings, so that some can stay unseen (val_unseen / test_unseen)."""

DEMO_AUGMENTATION = dict(time_shift=0.5, gain_db=6.0, noise_probability=0.5, noise_snr_db=(10.0, 30.0), speed=0.1,
                         freq_masks=2, freq_mask_width=24, time_masks=2, time_mask_width=12)
"""The published image crop and flip, plus audio augmentation (time shift, gain, noise, speed, masks): with
one or two training recordings per class, the audio network otherwise memorises the recordings."""

AMBIENCE = dict(ambience_probability=0.5, ambience_snr_db=(5.0, 15.0))
"""Another scene's sound 5-15 dB below the clip's, half the time (LVS, CSOL and IEr in the demo)."""

LOGMEL_MASKS = dict(freq_mask_width=6, time_mask_width=36)
"""`DEMO_AUGMENTATION`'s masks at the same shares of the 64-band, 200-frame/s log-mel as of LVS's 257-bin, 66-frame/s
spectrogram (the widths count bins and frames): DenseAV in the demo. CSOL and IEr keep the unscaled ones, chosen
on val (docs/demo.md, "Every method")."""

AUGMENTATION_PRESETS = {"ambience": AMBIENCE, "logmel_masks": LOGMEL_MASKS}
"""The augmentation presets a method's `demo_recipe` may name in its "training" ("augment": "ambience")."""


def _recipes():
    """{registered name: `demo_recipe`} of every method that has one."""
    from keras_avloc.models.registry import get_method_class, method_names

    return {name: get_method_class(name).demo_recipe for name in method_names()
            if get_method_class(name).demo_recipe}


def _training(recipe, key="training"):
    settings = dict(recipe.get(key, recipe.get("training", {})))
    if isinstance(settings.get("augment"), str) and settings["augment"] in AUGMENTATION_PRESETS:
        settings["augment"] = AUGMENTATION_PRESETS[settings["augment"]]
    return settings


def _recipe_table(key):
    """{method: its recipe's `key`} over the methods whose recipe sets it ("training" and "full_training" resolve
    named augmentations; "full_training" falls back to "training")."""
    table = {}
    for name, recipe in _recipes().items():
        if key in ("training", "full_training"):
            if recipe.get("training") or recipe.get(key):
                table[name] = _training(recipe, key)
        elif key in recipe:
            table[name] = dict(recipe[key])
    return table


METHOD_TRAINING = _recipe_table("training")
"""Per-method training settings of the demo, chosen on val: each method's `demo_recipe["training"]` (the reasons
sit beside each recipe in its module and in docs/demo.md)."""

METHOD_SETTINGS = _recipe_table("settings")
"""Per-method constructor arguments of the demo (named options; the defaults stay the papers')."""

FULL_METHOD_TRAINING = _recipe_table("full_training")
"""`METHOD_TRAINING` of the full preset (65 classes, 6,000 scenes): a recipe's "full_training" where it has one
(EZ-VSL: its official 1e-4)."""


def method_stages(method):
    """The registered models of a demo method, in order: it, then each `next_stage` (CSOL / IEr: stage one, then
    stage two). A stage that names another method in its "init_from" (IEr's stage one continues CSOL's) starts from
    that method's stage one of the same init."""
    from keras_avloc.models.registry import get_method_class

    stages = [method]
    while get_method_class(stages[-1]).next_stage:
        stages.append(get_method_class(stages[-1]).next_stage)
    return tuple(stages)


def trained_stages(method):
    """The stages the demo trains: those up to the one it scores (a recipe's "scored_stage"; default: the last); a
    later stage would change nothing in the report. Multi-stage methods train stage one on `train` into
    `<run>-stage1/` and stage two on `train_mosaic` from it into `<run>/`."""
    stages = method_stages(method)
    return stages[:_recipes().get(method, {}).get("scored_stage", len(stages))]


def all_methods():
    """`avloc demo --methods all`: every method that localises in a frame and has a place in the demo (its recipe's
    "order"; AVC / AVSA score 360° clips), in that order."""
    recipes = _recipes()
    return tuple(sorted((name for name, recipe in recipes.items() if "order" in recipe),
                        key=lambda name: (recipes[name]["order"], name)))


def default_methods():
    """The default demo's methods: those whose recipe says "default", in demo order."""
    recipes = _recipes()
    return tuple(name for name in all_methods() if recipes[name].get("default"))


_TRAINING = dict(
    size=224, image_size=160, clip_seconds=1.0, batch_size=32, width=16, learning_rate=3e-4, augment=DEMO_AUGMENTATION,
    method_training=METHOD_TRAINING, cache=True, method_settings=METHOD_SETTINGS,
    standin=dict(per_class=16, epochs=12, image_size=112, batch_size=64, learning_rate=2e-3), run_eagerly=False,
    variety="narrow", audio_level_db=-20.0,
)
PRESETS = {
    # Chosen on val and val_ood. On 2 CPU cores with native bf16 (no AMX): about 7 minutes with the data and the
    # stand-in built, 10 to 11.5 from a fresh clone (615-690 s); `--ablations` adds the from-scratch runs; `--methods all`
    # took about 17 minutes with the earlier settings (docs/demo.md).
    "default": dict(_TRAINING, classes=DEMO_CLASSES, n_train=1600, n_val=160, n_test=320, n_val_unseen=160,
                    n_test_unseen=160, n_val_ood=160, n_test_ood=320, epochs=8, scratch=False),
    # Every sounding class of the benchmark (about 32 minutes with the data built). EZ-VSL trains at its official
    # 1e-4 here (`FULL_METHOD_TRAINING`).
    "full": dict(_TRAINING, classes=None, n_train=6000, n_val=400, n_test=800, n_val_unseen=400, n_test_unseen=400,
                 n_val_ood=400, n_test_ood=800, epochs=12, scratch=False, method_training=FULL_METHOD_TRAINING),
    # End-to-end smoke run (tests): a few scenes, one epoch, tiny networks.
    "tiny": dict(
        classes=DEMO_CLASSES, n_train=8, n_val=8, n_test=8, n_val_unseen=8, n_test_unseen=8, n_test_ood=8, size=64,
        variety="wide", audio_level_db=-20.0,
        image_size=64, clip_seconds=0.5, epochs=1, batch_size=4, width=4, learning_rate=1e-4,
        augment=DEMO_AUGMENTATION, method_training=METHOD_TRAINING, cache=True,
        method_settings=_recipe_table("tiny_settings"),
        method_epochs=False,
        scratch=False, standin=dict(per_class=2, epochs=1, image_size=48, render_size=56, batch_size=16,
                                   learning_rate=1e-3),
        run_eagerly=True,
    ),
}
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


class DemoError(AvlocError, FileExistsError):
    """An output or data folder that holds another demo's work; the message says what to delete or pass."""


def _step(message):
    print(f"\n== {message}", flush=True)


def training_split(method, preset=None):
    """The split a method trains on in the demo: the "split" of its `METHOD_TRAINING` entry in `preset`, else its
    own default ("train"; DenseAV: "train+train_speech"; CSOL / IEr stage two: "train_mosaic")."""
    from keras_avloc.models.registry import get_method_class

    own = (preset or PRESETS["default"]).get("method_training", {}).get(method, {})
    return own.get("split") or get_method_class(method).default_split


def needed_splits(methods, preset=None):
    """Every training split the demo's methods read."""
    return {split for method in methods for stage in trained_stages(method)
            for split in training_split(stage, preset).split("+")}


def build_data(data_root, preset, seed, workers, speech=False, mosaic=False):
    """The demo's stamps build; `speech` adds train_speech (half as many scenes as train) for DenseAV, `mosaic`
    train_mosaic (as many) for the stage two of CSOL and IEr."""
    from keras_avloc.data.stamps import OtherBuildError, build_stamps

    try:
        return build_stamps(
            data_root, n_train=preset["n_train"], n_val=preset["n_val"], n_test=preset["n_test"], n_test_mix=0,
            n_train_mix=0, n_test_ext=0, n_speech=0, size=preset["size"], seed=seed, workers=workers,
            classes=preset.get("classes"), n_val_unseen=preset["n_val_unseen"], n_test_unseen=preset["n_test_unseen"],
            n_train_speech=preset["n_train"] // 2 if speech else 0,
            n_train_mosaic=preset["n_train"] // 2 if mosaic else 0, variety=preset.get("variety", "narrow"),
            n_val_ood=preset.get("n_val_ood", 0), n_test_ood=preset.get("n_test_ood", 0),
        )
    except OtherBuildError:
        raise DemoError(
            f"{data_root} holds a stamps build with other settings (an older demo, another preset or seed); "
            f"delete it (rm -r {data_root}) or pass --data with a new folder."
        ) from None


def standin_path(data_root, preset):
    return os.path.join(data_root, "standin", f"resnet18_w{preset['width']}.weights.h5")


def build_standin(data_root, preset, classes, seed, precision, workers):
    """The ImageNet stand-in for this benchmark (trained once, kept next to the data)."""
    from keras_avloc.training.pretrain import pretrain_image

    settings = dict(preset["standin"])
    path = standin_path(data_root, preset)
    summary = pretrain_image(path, classes, width=preset["width"], seed=seed, mixed_precision=precision,
                             workers=workers, verbose=2, **settings)
    return path, summary


def check_runs_match_data(out_dir, data_summary, methods):
    """Resuming is only right on the data the runs were trained on: records the data in
    `out_dir/data.json` and refuses to reuse runs made on other data (or by a demo that did not record it)."""
    data = {key: data_summary.get(key) for key in ("classes", "size", "seed")}
    # train_speech / train_mosaic (built only for DenseAV / CSOL and IEr) change nothing the other methods
    # train or are scored on.
    data["scenes"] = {split: info.get("scenes") for split, info in sorted(data_summary.get("splits", {}).items())
                      if split not in ("train_speech", "train_mosaic")}
    path = os.path.join(out_dir, "data.json")
    recorded = None
    if os.path.isfile(path):
        with open(path) as handle:
            recorded = json.load(handle)
    started = [m for m in methods if os.path.exists(os.path.join(out_dir, m, "train_state.json"))]
    if (recorded is not None and recorded != json.loads(json.dumps(data))) or (recorded is None and started):
        raise DemoError(
            f"{out_dir} holds demo runs ({', '.join(started) or 'data.json'}) trained on other data than "
            f"this demo's; delete the folder (rm -r {out_dir}) or pass --out with a new folder."
        )
    write_text(path, json.dumps(data, indent=1) + "\n")


def train_method(method, data_root, out_dir, preset, seed, precision, init_weights, init_from=None):
    """Trains one registered model (one stage) with the demo's settings; returns it."""
    from keras_avloc.training import train

    model_kwargs = {"backbone_kwargs": {"width": preset["width"]}}
    model_kwargs.update(preset.get("method_settings", {}).get(method, {}))
    own = preset.get("method_training", {}).get(method, {})
    augment = preset.get("augment")
    if isinstance(own.get("augment"), str):  # a named setting replaces the demo's augmentation
        augment = own["augment"]
    elif isinstance(augment, dict) and own.get("augment"):  # a dict adds to it
        augment = {**augment, **own["augment"]}
    learning_rate = own.get("learning_rate", preset["learning_rate"])
    epochs = own.get("epochs", preset["epochs"]) if preset.get("method_epochs", True) else preset["epochs"]
    model, _ = train(
        method, data_root, out_dir, epochs=epochs, batch_size=preset["batch_size"],
        split=training_split(method, preset), val_split=None, learning_rate=learning_rate, image_size=preset["image_size"],
        clip_seconds=own.get("clip_seconds", preset["clip_seconds"]), model_kwargs=model_kwargs, seed=seed,
        run_eagerly=preset.get("run_eagerly", False), augment=augment, cache=preset.get("cache", False),
        mixed_precision=precision, init_image_weights=init_weights, verbose=2, init_from=init_from,
        audio_level_db=preset.get("audio_level_db"),
    )
    return model


def train_demo_method(method, init, name, data_root, out_dir, preset, seed, precision, weights, timings):
    """Trains a demo method into `out_dir/name` (a two-stage one: its stages up to the one the demo scores,
    `trained_stages`; stage one goes to `out_dir/name-stage1`); returns the scored model."""
    stages = method_stages(method)
    previous = None
    models = []
    for number, stage in enumerate(trained_stages(method), start=1):
        folder = name if number == len(stages) else f"{name}-stage{number}"
        init_from = previous
        source = preset.get("method_training", {}).get(stage, {}).get("init_from")
        if number == 1 and source:  # IEr's stage one continues CSOL's stage one of the same init
            source_name = source + name[len(method):]  # "ier-scratch" -> "csol-scratch"
            source_folder = f"{source_name}-stage1" if len(method_stages(source)) > 1 else source_name
            # A finished run returns at once (`train` resumes), so CSOL's stage one is trained once for both.
            start = time.time()
            train_method(method_stages(source)[0], data_root, os.path.join(out_dir, source_folder), preset, seed,
                         precision, weights if init == "stand-in" else None)
            timings.setdefault(f"train {source_folder}", time.time() - start)
            init_from = os.path.join(out_dir, source_folder, "model.keras")
        start = time.time()
        models.append(train_method(stage, data_root, os.path.join(out_dir, folder), preset, seed, precision,
                                   weights if (init == "stand-in" and init_from is None) else None, init_from=init_from))
        timings[f"train {folder}"] = time.time() - start
        previous = os.path.join(out_dir, folder, "model.keras")
    return models[-1]


def objectness_encoder(weights_path, preset):
    """The stand-in ResNet-18 (layer4 stride 1, LVS's map resolution) for the objectness baseline."""
    from keras_avloc.backbones import ResNet18

    encoder = ResNet18(layer4_stride=1, width=preset["width"], name="standin")
    encoder.load_weights(weights_path)
    return encoder


def evaluate_method(model, data_root, out_dir, split, preset, baselines, encoder=None, class_conditioned=False,
                    listening=False):
    from keras_avloc.evaluation import evaluate_model

    return evaluate_model(model, data_root, split=split, protocol="stamps", out_dir=out_dir, batch_size=64,
                          baselines=baselines, objectness_encoder=encoder, progress=False,
                          class_conditioned=class_conditioned, listening=listening)


def oracle_metrics(data_root, split, work_dir):
    """Scores of the ground truth itself (`metrics.baselines.ground_truth_oracle`): the ceiling of the table."""
    import numpy as np

    from keras_avloc.data.annotations import load_split
    from keras_avloc.evaluation import evaluate_heatmaps
    from keras_avloc.evaluation.report import record_ground_truth
    from keras_avloc.metrics.baselines import ground_truth_oracle

    records = load_split(data_root, split)
    maps = ground_truth_oracle([record_ground_truth(record, "stamps")[0] for record in records])
    path = os.path.join(work_dir, f"oracle_{split}.npz")
    with atomic_output(path, suffix=".npz") as temporary:
        np.savez(temporary, files=np.array([record["file"] for record in records]), heatmaps=maps)
    row = evaluate_heatmaps(path, data_root, split=split, protocol="stamps", progress=False)["model"]
    # The oracle is the box: its scores against the exact masks say nothing about a ceiling.
    return {key: value for key, value in row.items() if not key.startswith("mask_")}


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


def report_markdown(rows, generalisation, checks, timings, settings, data_summary, standin_summary, ood_rows=(),
                    listening=()):
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


def run_demo(out_dir="runs/demo", data_root="datasets/stamps-demo", preset="default", methods=None, seed=0,
             workers=None, epochs=None, precision="auto", scratch=None):
    """Runs the whole demo and returns the path of `report.md`.

    Args:
        out_dir: where models, evaluations, `report.md`, `results.json` and `heatmaps.png` go.
        data_root: where the stamps benchmark and its ImageNet stand-in are built (reused when present).
        preset: "default" (about 7 minutes on 2 CPU cores with native bf16 and the data built), "full" (every
            sounding class, about 32 minutes with the data built, measured with the earlier settings) or "tiny"
            (a smoke run).
        methods: methods to train, in order (the registered names, e.g. "lvs", "ezvsl", "avgn"; default:
            `default_methods()`).
        seed: seed for the data, the stand-in and the training.
        workers: processes for building the data (default: all cores).
        epochs: override the preset's epochs.
        precision: "auto" (bf16 when the CPU has native bf16, else float32), "bf16" or None.
        scratch: also train every method from scratch (default: the preset's choice).
    """
    import tensorflow as tf

    # Grappler's graph rewrites double the first-step tracing time here without speeding the steps up.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    if preset not in PRESETS:
        raise DemoError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    settings = dict(PRESETS[preset])
    if epochs is not None:
        settings["epochs"] = int(epochs)
    if scratch is not None:
        settings["scratch"] = bool(scratch)
    settings["precision"] = resolve_precision(precision)
    methods = tuple(methods) if methods else default_methods()
    os.makedirs(out_dir, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    timings = {}

    _step(f"1/5 the stamps benchmark in {data_root} (skipped when already built)")
    start = time.time()
    splits = needed_splits(methods, settings)
    summary = build_data(data_root, settings, seed, workers, speech="train_speech" in splits,
                         mosaic="train_mosaic" in splits)
    timings["data (once)"] = time.time() - start

    _step("2/5 the ImageNet stand-in: a ResNet-18 that recognises the stamps that never sound here (once)")
    start = time.time()
    weights, standin_summary = build_standin(data_root, settings, summary["classes"], seed, settings["precision"],
                                             workers)
    timings["ImageNet stand-in (once)"] = time.time() - start
    runs = [(method, "stand-in", method) for method in methods]
    if settings["scratch"]:
        runs += [(method, "scratch", f"{method}-scratch") for method in methods]
    check_runs_match_data(out_dir, summary, [name for _, _, name in runs])
    demo_start = time.time()

    models = {}
    for number, (method, init, name) in enumerate(runs, start=1):
        _step(f"3/5 training {name} ({number}/{len(runs)}) -> {os.path.join(out_dir, name)}")
        models[name] = train_demo_method(method, init, name, data_root, out_dir, settings, seed, settings["precision"],
                                         weights, timings)

    _step("4/5 evaluating on the test split (and test_unseen, test_ood, val, val_unseen for the stand-in runs; each "
          "test split also with another class's audio)")
    start = time.time()
    encoder = objectness_encoder(weights, settings)
    rows, baselines, generalisation, stand_in_rows = [], {}, [], []
    ood = settings.get("n_test_ood", 0) > 0
    ood_rows, ood_baselines, listening = [], {}, []
    for number, (method, init, name) in enumerate(runs):
        model = models[name]
        display = getattr(model, "display_name", None) or method
        # A class-aware model (AVGN) is scored as its paper's test code does: the map of each clip's ground-truth
        # class. The maps of the classes it predicts itself get a row of their own.
        conditioned = isinstance(model, MultiSource)
        metrics = evaluate_method(model, data_root, os.path.join(out_dir, name, "eval"), "test", settings,
                                  baselines=(number == 0), encoder=encoder, class_conditioned=conditioned,
                                  listening=init == "stand-in")
        unseen = None
        if init == "stand-in":
            unseen, val, val_unseen = (
                evaluate_method(model, data_root, None, split, settings, False, class_conditioned=conditioned)["model"]
                for split in ("test_unseen", "val", "val_unseen"))
            generalisation.append((display, val, val_unseen))
            stand_in_rows.append((display, metrics["model"]))
            heard = {"test": metrics["listening"]}
            if ood:
                outside = evaluate_method(model, data_root, os.path.join(out_dir, name, "eval_ood"), "test_ood",
                                          settings, baselines=not ood_baselines, encoder=encoder,
                                          class_conditioned=conditioned, listening=True)
                ood_baselines = ood_baselines or outside["baselines"]
                ood_rows.append((display, outside["model"]))
                heard["test_ood"] = outside["listening"]
            listening.append((display, heard))
        rows.append((display, init, metrics["model"], unseen))
        baselines.update(metrics.get("baselines", {}))
        if conditioned:  # the listening control already scored the classes it hears
            predicted = metrics.get("heard_classes") or evaluate_method(model, data_root, None, "test", settings,
                                                                        False)["model"]
            rows.append((f"{display}, predicted classes", init, predicted, None))
    for key, row in baselines.items():
        rows.append((BASELINE_NAMES.get(key, key), "-", row, None))
    rows.append((ORACLE_NAME, "-", oracle_metrics(data_root, "test", out_dir), None))
    from keras_avloc.evaluation.controls import listening_summary

    random_rows = {"test": baselines.get("random"), "test_ood": ood_baselines.get("random")}
    # Each side of the control as the evaluation ran it (a class-aware model: the classes it hears, both times).
    listening = [(display, {split: listening_summary({"auc": item["own_auc"], "pointing_game": item["own_pointing_game"]},
                                                     item, random_rows[split])
                            for split, item in heard.items()}) for display, heard in listening]
    ood_rows += [(BASELINE_NAMES.get(key, key), row) for key, row in ood_baselines.items()]
    timings["evaluation"] = time.time() - start

    _step("5/5 writing the report")
    start = time.time()
    figure_path = heatmap_figure([(getattr(models[name], "display_name", None) or method, models[name])
                                  for method, init, name in runs if init == "stand-in"],
                                 data_root, os.path.join(out_dir, "heatmaps.png"), settings)
    timings["report"] = time.time() - start
    timings["demo with the data and the stand-in built"] = time.time() - demo_start
    checks = target_checks(stand_in_rows, baselines["center"], generalisation) if "center" in baselines else []
    checks += outside_checks(ood_rows, listening)
    report_path = os.path.join(out_dir, "report.md")
    write_text(report_path, report_markdown(rows, generalisation, checks, timings, settings, summary, standin_summary,
                                            ood_rows, listening))
    write_json(os.path.join(out_dir, "results.json"), {
        "results": [{"method": name, "init": init, "test": row, "test_unseen": unseen}
                    for name, init, row, unseen in rows],
        "generalisation": [{"method": name, "val": val, "val_unseen": unseen} for name, val, unseen in generalisation],
        "test_ood": [{"method": name, "test_ood": row} for name, row in ood_rows],
        "listening": [{"method": name, **splits} for name, splits in listening],
        "targets": checks, "timings": timings, "settings": settings, "standin": standin_summary}, indent=1)
    print(open(report_path).read().split("## Settings")[0])
    print(f"report:   {report_path}\nheatmaps: {figure_path}")
    return report_path
