"""The 360° demo (`avloc demo --methods avc,avsa`): the synthetic 360° benchmark -> each spatial method, after the
method it starts from (AVSA after AVC, the official curriculum) -> the sphere protocol beside the signal-processing
baselines -> report.

Steps (each resumes when re-run):
    1. the synthetic 360° benchmark (`keras_avloc.data.sphere`) with the stamps demo's eight classes;
    2. training, with each method's `demo_recipe` ("training": `train` arguments, "settings": constructor
       arguments; chosen on val, docs/methods/avsa.md);
    3. evaluation on the test split: `keras_avloc.evaluation.sphere.run_sphere_protocol` (direction of arrival,
       panorama cIoU, the steered-response power, the intensity vector, a front prior, random directions, the
       model's video-only objectness, and with the default preset the AVC-Bin / AVSA-Bin probes of the last
       model);
    4. report.md and results.json.

Example:
    >>> from keras_avloc.demo.sphere import run_sphere_demo
    >>> report_path = run_sphere_demo("runs/demo-sphere", "datasets/sphere-demo", ("avc", "avsa"))  # doctest: +SKIP
"""

import csv
import os
import time

from keras_avloc.demo.recipes import DEMO_CLASSES, _training
from keras_avloc.io.errors import AvlocError
from keras_avloc.io.files import write_json, write_text
from keras_avloc.perf import resolve_precision

SPHERE_PRESETS = {
    # 480 training clips of the stamps demo's eight classes (about 60 each); the settings of docs/methods/avsa.md
    "default": dict(classes=DEMO_CLASSES, n_train=480, n_val=96, n_test=96, size=(256, 512), width=16, image_size=64,
                    batch_size=32, cache=True, probes=True, probe_clips=480, run_eagerly=False, epochs=None,
                    settings_key="settings"),
    # End-to-end smoke run (tests): a few clips, one epoch, tiny networks, no probes.
    "tiny": dict(classes=("cow", "dog", "duck"), n_train=4, n_val=2, n_test=2, size=(64, 128), width=4, image_size=32,
                 batch_size=2, cache=False, probes=False, probe_clips=None, run_eagerly=True, epochs=1,
                 settings_key="tiny_settings"),
}
BASELINES = ("SRP (2° grid)", "intensity vector", "SRP (sweep grid)", "front prior", "random")


class SphereDemoError(AvlocError, FileExistsError):
    """A data folder that holds another build; the message says what to delete or pass."""


def sphere_runs(methods):
    """The methods in training order, each after the method it starts from (`init_from_method`), which is added
    when missing: ("avsa",) -> ("avc", "avsa")."""
    from keras_avloc.models.registry import get_method_class

    order = []

    def add(method):
        before = get_method_class(method).init_from_method
        if before:
            add(before)
        if method not in order:
            order.append(method)

    for method in methods:
        add(method)
    return tuple(order)


def _train(method, data_root, out_dir, preset, seed, precision, init_from):
    from keras_avloc.models.registry import get_method_class
    from keras_avloc.training import train

    recipe = get_method_class(method).demo_recipe
    own = _training(recipe)
    model_kwargs = {"width": preset["width"], **recipe.get(preset["settings_key"], recipe.get("settings", {}))}
    model, _ = train(
        method, data_root, out_dir, epochs=preset["epochs"] or own.get("epochs", 20), batch_size=preset["batch_size"],
        val_split="val", learning_rate=own.get("learning_rate"), image_size=preset["image_size"], seed=seed,
        model_kwargs=model_kwargs, mixed_precision=precision, cache=preset["cache"], verbose=2,
        run_eagerly=preset["run_eagerly"], init_from=init_from)
    with open(os.path.join(out_dir, "training_log.csv"), newline="") as handle:  # every epoch, a resumed run's too
        rows = list(csv.DictReader(handle))
    return model, {key: [float(row[key]) for row in rows if row.get(key)] for key in ("loss", "val_loss")}


def sphere_report(rows, runs, timings, settings):
    """report.md: the test table (learned rows, their objectness, the baselines), the val losses, the timings."""
    lines = ["# keras-avloc 360° demo report", "",
             f"Test split of the synthetic 360° benchmark ({settings['n_test']} clips; {settings['n_train']} training "
             f"clips of {len(settings['classes'])} classes). Direction of arrival: the best of 72 viewpoints swept over "
             "the panorama; cIoU: the swept map on the panorama against the sounding object's mask.", "",
             "| method | DoA median (°) | within 20° | panorama cIoU | AVC-Bin | AVSA-Bin |", "|---|---|---|---|---|---|"]
    for name, row in rows:
        cell = lambda key: f"{row[key]:.3f}" if row.get(key) is not None else "—"  # noqa: E731
        lines.append(f"| {name} | {row['doa_median']:.1f} | {row['hit20']:.3f} | {cell('ciou')} | {cell('avc_bin')} | "
                     f"{cell('avsa_bin')} |")
    lines += ["", "## Training (val: viewpoints drawn by the same sampler)", "",
              "| method | epochs | train loss | val loss |", "|---|---|---|---|"]
    for display, history in runs:
        last = lambda key: f"{history[key][-1]:.3f}" if history.get(key) else "—"  # noqa: E731
        lines.append(f"| {display} | {len(history.get('loss', []))} | {last('loss')} | {last('val_loss')} |")
    lines += ["", "## Timings", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {seconds:.0f} |" for step, seconds in timings.items()]
    return "\n".join(lines) + "\n"


def sphere_methods():
    """Every registered 360° method with a demo recipe (the 360° demo's default)."""
    from keras_avloc.models.registry import get_method_class, method_names

    return tuple(name for name in method_names()
                 if get_method_class(name).data_kind == "sphere" and get_method_class(name).demo_recipe)


def run_sphere_demo(out_dir="runs/demo-sphere", data_root="datasets/sphere-demo", methods=None, preset="default",
                    seed=0, precision="auto", epochs=None):
    """Runs the 360° demo and returns the path of `report.md`.

    Args:
        out_dir: where the runs, their evaluations, `report.md` and `results.json` go.
        data_root: where the 360° benchmark is built (reused when present).
        methods: the 360° methods to score (default: `sphere_methods()`; each trains after the method it starts
            from, `sphere_runs`).
        preset: "default" or "tiny" (a smoke run), `SPHERE_PRESETS`.
        seed: seed of the data and the training.
        precision: "auto" (bf16 where the CPU has it natively), "bf16" or None (float32).
        epochs: override every method's epochs.
    """
    from keras_avloc.data.sphere import build_sphere
    from keras_avloc.data.stamps import OtherBuildError
    from keras_avloc.evaluation.sphere import run_sphere_protocol
    from keras_avloc.models.registry import get_method_class

    if preset not in SPHERE_PRESETS:
        raise SphereDemoError(f"unknown preset {preset!r} for the 360° demo; choose one of {', '.join(SPHERE_PRESETS)}.")
    settings = dict(SPHERE_PRESETS[preset])
    settings["epochs"] = int(epochs) if epochs else settings["epochs"]
    precision = resolve_precision(precision)
    runs = sphere_runs(methods or sphere_methods())
    os.makedirs(out_dir, exist_ok=True)
    timings = {}
    if os.path.isfile(os.path.join(data_root, ".parts", "params.json")):
        raise SphereDemoError(f"{data_root} holds a stamps build (the frame demo's); pass --data with another folder "
                              "for the 360° benchmark.")
    print(f"\n== 1/4 the 360° benchmark in {data_root} (skipped when already built)", flush=True)
    start = time.time()
    try:
        build_sphere(data_root, n_train=settings["n_train"], n_val=settings["n_val"], n_test=settings["n_test"],
                     size=settings["size"], seed=seed, classes=list(settings["classes"]))
    except OtherBuildError:
        raise SphereDemoError(f"{data_root} holds a 360° build with other settings (another preset or seed); delete "
                              f"it (rm -r {data_root}) or pass --data with a new folder.") from None
    timings["data (once)"] = time.time() - start
    models, histories = {}, []
    for number, method in enumerate(runs, start=1):
        print(f"\n== 2/4 training {method} ({number}/{len(runs)}) -> {os.path.join(out_dir, method)}", flush=True)
        start = time.time()
        before = get_method_class(method).init_from_method
        init_from = os.path.join(out_dir, before, "model.keras") if before else None
        models[method], history = _train(method, data_root, os.path.join(out_dir, method), settings, seed, precision,
                                         init_from)
        histories.append((models[method].display_name or method, history))
        timings[f"train {method}"] = time.time() - start
    print("\n== 3/4 evaluating on the test split", flush=True)
    start = time.time()
    learned, objectness, baselines, results = [], [], [], {}
    for method in reversed(runs):  # the curriculum's last method first
        model = models[method]
        display = model.display_name or model.name  # as evaluate_sphere names its row
        # the probes (a few minutes a model) score the curriculum's last model only
        result = run_sphere_protocol(model, data_root, "test", out_dir=os.path.join(out_dir, method, "eval"),
                                     probes=settings["probes"] and method == runs[-1],
                                     probe_clips=settings["probe_clips"], progress=True)
        results[display] = {"rows": result["rows"], "probes": result["probes"]}
        learned.append((display, {**result["rows"][display], **(result["probes"] or {})}))
        objectness.append((f"objectness ({display}'s video features only)", result["rows"]["objectness (video only)"]))
        baselines = baselines or [(name, result["rows"][name]) for name in BASELINES if name in result["rows"]]
    timings["evaluation"] = time.time() - start
    print("\n== 4/4 writing the report", flush=True)
    report_path = os.path.join(out_dir, "report.md")
    write_text(report_path, sphere_report(learned + objectness + baselines, histories, timings, settings))
    write_json(os.path.join(out_dir, "results.json"), {"results": results, "training": dict(histories),
                                                       "timings": timings, "settings": settings}, indent=1)
    print(open(report_path).read())
    print(f"report: {report_path}")
    return report_path
