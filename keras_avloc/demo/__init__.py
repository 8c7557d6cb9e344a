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
from keras_avloc.demo.report import (  # noqa: F401 - re-exported: the report's tables and targets
    BASELINE_NAMES, ORACLE_NAME, REPORT_METRICS, TARGETS, heatmap_figure, outside_checks, report_markdown,
    target_checks,
)

from keras_avloc.demo.recipes import (  # noqa: F401 - re-exported: the recipes and presets
    AMBIENCE, AUGMENTATION_PRESETS, DEMO_AUGMENTATION, DEMO_CLASSES, FULL_METHOD_SETTINGS, FULL_METHOD_TRAINING,
    LOGMEL_MASKS, METHOD_SETTINGS, METHOD_TRAINING, PRESETS, _recipe_table, _recipes, _training, all_methods,
    default_methods, method_stages, prompted_methods, trained_stages, uses_speech_standin,
)


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


def build_data(data_root, preset, seed, workers, speech=False, mosaic=False, speech_tests=False):
    """The demo's stamps build; `speech` adds train_speech (half as many scenes as train) for DenseAV, `mosaic`
    train_mosaic (as many) for the stage two of CSOL and IEr, `speech_tests` test_speech (as many as test) and
    test_speech_unseen (half) for the sound and speech protocols (`prompted_methods`)."""
    from keras_avloc.data.stamps import OtherBuildError, build_stamps

    if os.path.isfile(os.path.join(data_root, ".parts", "sphere_params.json")):
        raise DemoError(f"{data_root} holds a 360° build (the 360° demo's); pass --data with another folder for the "
                        "stamps benchmark.")
    try:
        return build_stamps(
            data_root, n_train=preset["n_train"], n_val=preset["n_val"], n_test=preset["n_test"], n_test_mix=0,
            n_train_mix=0, n_test_ext=0, n_speech=preset["n_test"] if speech_tests else 0, size=preset["size"],
            seed=seed, workers=workers, n_test_speech_unseen=preset["n_test"] // 2 if speech_tests else 0,
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


def speech_standin_path(data_root, preset):
    return os.path.join(data_root, "standin", f"speech_w{preset['width']}.weights.h5")


def build_speech_standin(data_root, preset, seed, precision, workers):
    """The speech stand-in (trained once, kept next to the data): the audio network of the methods whose recipe
    asks for it (`uses_speech_standin`)."""
    from keras_avloc.training.pretrain import pretrain_audio

    path = speech_standin_path(data_root, preset)
    summary = pretrain_audio(path, width=preset["width"], seed=seed, mixed_precision=precision, workers=workers,
                             verbose=2, level_db=preset.get("audio_level_db") or -20.0, **preset["speech_standin"])
    return path, summary


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
    # train or are scored on; test_speech / test_speech_unseen (the sound and speech protocols) are scored again
    # on every run.
    data["scenes"] = {split: info.get("scenes") for split, info in sorted(data_summary.get("splits", {}).items())
                      if split not in ("train_speech", "train_mosaic", "test_speech", "test_speech_unseen")}
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


def train_method(method, data_root, out_dir, preset, seed, precision, init_weights, init_from=None,
                 init_audio_weights=None):
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
        audio_level_db=preset.get("audio_level_db"), init_audio_weights=init_audio_weights,
    )
    return model


def train_demo_method(method, init, name, data_root, out_dir, preset, seed, precision, weights, timings,
                      audio_weights=None):
    """Trains a demo method into `out_dir/name` (a two-stage one: its stages up to the one the demo scores,
    `trained_stages`; stage one goes to `out_dir/name-stage1`); returns the scored model. A stage whose recipe asks for
    the speech stand-in starts its audio network from `audio_weights` when it starts from the image stand-in."""
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
        fresh = init == "stand-in" and init_from is None
        models.append(train_method(stage, data_root, os.path.join(out_dir, folder), preset, seed, precision,
                                   weights if fresh else None, init_from=init_from,
                                   init_audio_weights=audio_weights if fresh and uses_speech_standin(stage) else None))
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


PROMPTED_SPLITS = (("stamps-sound", "test"), ("stamps-speech", "test_speech"), ("stamps-speech", "test_speech_unseen"))
"""The sound and speech protocols the demo scores `prompted_methods` on (DenseAV's; `evaluate_prompted`)."""


def evaluate_prompted_method(model, data_root, out_dir):
    """{split: `evaluate_prompted` metrics} on `PROMPTED_SPLITS` (speech told apart from the sound pairs of test)."""
    from keras_avloc.evaluation import evaluate_prompted

    return {split: evaluate_prompted(model, data_root, protocol=protocol, split=split, sound_split="test",
                                     out_dir=os.path.join(out_dir, split), batch_size=32, progress=False)
            for protocol, split in PROMPTED_SPLITS}


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


def run_demo(out_dir="runs/demo", data_root="datasets/stamps-demo", preset="default", methods=None, seed=0,
             workers=None, epochs=None, precision="auto", scratch=None):
    """Runs the whole demo and returns the path of `report.md`.

    Args:
        out_dir: where models, evaluations, `report.md`, `results.json` and `heatmaps.png` go.
        data_root: where the stamps benchmark and its ImageNet stand-in are built (reused when present).
        preset: "default" (4 to 7 minutes on 2 CPU cores with native bf16 and the data built), "full" (every
            sounding class, 20 to 32 minutes with the data built) or "tiny"
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
                         mosaic="train_mosaic" in splits, speech_tests=bool(prompted_methods(methods)))
    timings["data (once)"] = time.time() - start

    _step("2/5 the ImageNet stand-in: a ResNet-18 that recognises the stamps that never sound here (once)")
    start = time.time()
    weights, standin_summary = build_standin(data_root, settings, summary["classes"], seed, settings["precision"],
                                             workers)
    timings["ImageNet stand-in (once)"] = time.time() - start
    audio_weights, speech_summary = None, None
    if any(uses_speech_standin(stage) for method in methods for stage in trained_stages(method)):
        _step("2/5 the speech stand-in: an audio network that tells apart spoken words that never name a benchmark "
              "object (once)")
        start = time.time()
        audio_weights, speech_summary = build_speech_standin(data_root, settings, seed, settings["precision"], workers)
        timings["speech stand-in (once)"] = time.time() - start
    runs = [(method, "stand-in", method) for method in methods]
    if settings["scratch"]:
        runs += [(method, "scratch", f"{method}-scratch") for method in methods]
    check_runs_match_data(out_dir, summary, [name for _, _, name in runs])
    demo_start = time.time()

    models = {}
    for number, (method, init, name) in enumerate(runs, start=1):
        _step(f"3/5 training {name} ({number}/{len(runs)}) -> {os.path.join(out_dir, name)}")
        models[name] = train_demo_method(method, init, name, data_root, out_dir, settings, seed, settings["precision"],
                                         weights, timings, audio_weights)

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
    prompted = [(getattr(models[method], "display_name", None) or method,
                 evaluate_prompted_method(models[method], data_root, os.path.join(out_dir, method, "prompted")))
                for method in prompted_methods(methods)]
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
                                            ood_rows, listening, speech_summary, prompted))
    write_json(os.path.join(out_dir, "results.json"), {
        "results": [{"method": name, "init": init, "test": row, "test_unseen": unseen}
                    for name, init, row, unseen in rows],
        "generalisation": [{"method": name, "val": val, "val_unseen": unseen} for name, val, unseen in generalisation],
        "test_ood": [{"method": name, "test_ood": row} for name, row in ood_rows],
        "listening": [{"method": name, **splits} for name, splits in listening],
        "prompted": [{"method": name, **{split: metrics["model"] for split, metrics in scored.items()}}
                     for name, scored in prompted],
        "targets": checks, "timings": timings, "settings": settings, "standin": standin_summary,
        "speech_standin": speech_summary}, indent=1)
    print(open(report_path).read().split("## Settings")[0])
    print(f"report:   {report_path}\nheatmaps: {figure_path}")
    return report_path
