"""The built-in demo: stamps benchmark → train LVS and EZ-VSL → evaluate with baselines → report.

Every step resumes: the stamps builder skips finished scenes, training restores from its backup
(`BackupAndRestore`), and a finished step is not run again. Ctrl-C at any point loses at most the
epoch in progress.

Example:
    >>> from keras_avloc.demo import run_demo
    >>> report_path = run_demo("runs/demo", "datasets/stamps-demo")  # doctest: +SKIP
"""

import json
import os
import time

from keras_avloc.io.errors import AvlocError
from keras_avloc.io.files import atomic_output, write_text

DEMO_CLASSES = ("cello", "drum kit", "elephant", "fire truck", "frog", "penguin", "toucan", "zebra")
"""Sounding classes of the demo split. With all 65 classes (about 25 training scenes each) neither
method leaves the contrastive plateau within the CPU budget; eight classes that differ in look and
sound (200 scenes each) are learnable from scratch in minutes. Distractors still come from every
photo stamp. The full benchmark (`avloc data stamps`) uses all classes."""

PRESETS = {
    # Sized to finish within about 15 minutes on 2 CPU cores (see README for measured times).
    "default": dict(
        classes=DEMO_CLASSES, n_train=1600, n_val=100, n_test=300, size=224, image_size=112, clip_seconds=1.0,
        epochs=8, batch_size=32, backbone_kwargs={"width": 16}, learning_rate=1e-3, run_eagerly=False,
    ),
    # End-to-end smoke run (tests): a few scenes, one epoch, tiny networks.
    "tiny": dict(
        classes=DEMO_CLASSES, n_train=8, n_val=4, n_test=6, size=64, image_size=64, clip_seconds=0.5,
        epochs=1, batch_size=4, backbone_kwargs={"width": 8}, learning_rate=1e-4, run_eagerly=True,
    ),
}
METHODS = ("lvs", "ezvsl")
REPORT_METRICS = [("cIoU@0.5", "ciou@0.5"), ("AUC", "auc"), ("mean cIoU", "mean_ciou"),
                  ("pointing game", "pointing_game"), ("mask IoU", "mask_iou")]
BASELINE_NAMES = {"center": "centre prior", "random": "random map", "objectness": "objectness (LVS image encoder)"}


class DemoError(AvlocError, FileExistsError):
    """An output or data folder that holds another demo's work; the message says what to delete or pass."""


def _step(message):
    print(f"\n== {message}", flush=True)


def build_data(data_root, preset, seed, workers):
    from keras_avloc.data.stamps import OtherBuildError, build_stamps

    try:
        return build_stamps(
            data_root, n_train=preset["n_train"], n_val=preset["n_val"], n_test=preset["n_test"], n_test_mix=0,
            n_train_mix=0, n_test_ext=0, n_speech=0, size=preset["size"], seed=seed, workers=workers,
            classes=preset.get("classes"),
        )
    except OtherBuildError:
        raise DemoError(
            f"{data_root} holds a stamps build with other settings (an older demo, another preset or seed); "
            f"delete it (rm -r {data_root}) or pass --data with a new folder."
        ) from None


def check_runs_match_data(out_dir, data_summary, methods):
    """Resuming is only right on the data the runs were trained on: records the data in
    `out_dir/data.json` and refuses to reuse runs made on other data (or by a demo that did not record it)."""
    data = {key: data_summary.get(key) for key in ("classes", "size", "seed")}
    data["scenes"] = {split: info.get("scenes") for split, info in sorted(data_summary.get("splits", {}).items())}
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


def train_method(method, data_root, out_dir, preset, seed):
    from keras_avloc.training import train

    model, _ = train(
        method, data_root, out_dir, epochs=preset["epochs"], batch_size=preset["batch_size"], split="train",
        val_split="val", learning_rate=preset["learning_rate"], image_size=preset["image_size"],
        clip_seconds=preset["clip_seconds"], model_kwargs={"backbone_kwargs": dict(preset["backbone_kwargs"])},
        seed=seed, run_eagerly=preset.get("run_eagerly", False),
    )
    return model


def evaluate_method(model, data_root, out_dir, preset, baselines):
    from keras_avloc.evaluation import evaluate_model

    return evaluate_model(
        model, data_root, split="test", protocol="stamps", out_dir=out_dir, batch_size=preset["batch_size"],
        baselines=baselines, image_size=preset["image_size"], clip_seconds=preset["clip_seconds"],
    )


def heatmap_figure(model, data_root, path, preset, count=4):
    """Four panels (image, overlay, strong positive, clipped positive) for the first `count` test scenes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from keras_avloc.data import make_dataset
    from keras_avloc.io.imagenet import denormalize_images
    from keras_avloc.viz import four_panel_figure

    dataset = make_dataset(data_root, split="test", frontend=getattr(model, "frontend", "lvs"),
                           image_size=preset["image_size"], clip_seconds=preset["clip_seconds"], training=False,
                           batch_size=count)
    x, _ = next(iter(dataset))
    heatmaps = np.asarray(model.localize(x["image"], x["audio"]))
    images = denormalize_images(x["image"])
    panels = []
    for index in range(len(images)):
        figure = four_panel_figure(images[index], heatmaps[index], title=f"test scene {index}")
        figure.canvas.draw()
        panels.append(np.asarray(figure.canvas.buffer_rgba())[..., :3].copy())
        plt.close(figure)
    width = max(panel.shape[1] for panel in panels)
    padded = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    stacked = np.concatenate(padded, axis=0)
    import cv2

    with atomic_output(path, suffix=".png") as temporary:
        cv2.imwrite(temporary, cv2.cvtColor(stacked, cv2.COLOR_RGB2BGR))
    return path


def report_markdown(results, timings, preset, data_summary):
    lines = ["# keras-avloc demo report", "",
             "Stamps benchmark (real photo cut-outs with their own real recordings on real background photos), "
             "test split; LVS and EZ-VSL trained from scratch with `model.fit` on the train split, the validation "
             "split used only for monitoring. Baselines need no learning.", "",
             "| method | " + " | ".join(title for title, _ in REPORT_METRICS) + " |",
             "|---" * (len(REPORT_METRICS) + 1) + "|"]
    for name, row in results:
        cells = [f"{row[key]:.3f}" if isinstance(row.get(key), (int, float)) else "-" for _, key in REPORT_METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Settings", "", "```json", json.dumps(preset, indent=1, sort_keys=True), "```", "",
              "## Data", ""]
    for split, info in sorted(data_summary.get("splits", {}).items()):
        lines.append(f"- {split}: {info.get('scenes')} scenes")
    lines.append(f"- sounding classes ({len(data_summary.get('classes', []))}): "
                 f"{', '.join(data_summary.get('classes', []))}")
    lines += ["", "## Wall time", ""]
    lines += [f"- {name}: {seconds:.0f} s" for name, seconds in timings.items()]
    lines += ["", "Figures: `heatmaps.png` (four panels for test scenes, LVS), `<method>/eval/` (success curves, "
              "best/worst grids, metrics.json).", ""]
    return "\n".join(lines)


def run_demo(out_dir="runs/demo", data_root="datasets/stamps-demo", preset="default", methods=METHODS, seed=0,
             workers=None, epochs=None):
    """Runs the whole demo and returns the path of `report.md`.

    Args:
        out_dir: where models, evaluations, `report.md` and `heatmaps.png` go.
        data_root: where the stamps split is built (reused when present).
        preset: "default" (about 15 minutes on 2 CPU cores) or "tiny" (a smoke run).
        methods: methods to train, in order; the first one provides the objectness baseline's encoder.
        seed: seed for the data and the training.
        workers: processes for building the data (default: all cores).
        epochs: override the preset's number of epochs.
    """
    import tensorflow as tf

    # Grappler's graph rewrites double the first-step tracing time here without speeding the steps up.
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    settings = dict(PRESETS[preset])
    if epochs is not None:
        settings["epochs"] = int(epochs)
    os.makedirs(out_dir, exist_ok=True)
    timings = {}

    _step(f"1/4 building the stamps benchmark in {data_root} (skipped when already built)")
    start = time.time()
    summary = build_data(data_root, settings, seed, workers or os.cpu_count() or 1)
    timings["data"] = time.time() - start
    check_runs_match_data(out_dir, summary, methods)

    models = {}
    for number, method in enumerate(methods, start=1):
        _step(f"2/4 training {method} ({number}/{len(methods)}) → {os.path.join(out_dir, method)}")
        start = time.time()
        models[method] = train_method(method, data_root, os.path.join(out_dir, method), settings, seed)
        timings[f"train {method}"] = time.time() - start

    results = []
    baselines = {}
    for number, method in enumerate(methods):
        _step(f"3/4 evaluating {method} on the test split")
        start = time.time()
        metrics = evaluate_method(models[method], data_root, os.path.join(out_dir, method, "eval"), settings,
                                  baselines=(number == 0))
        timings[f"evaluate {method}"] = time.time() - start
        results.append((getattr(models[method], "display_name", None) or method, metrics["model"]))
        baselines.update(metrics.get("baselines", {}))
    for name, row in baselines.items():
        results.append((BASELINE_NAMES.get(name, name), row))

    _step("4/4 writing the report")
    figure_path = heatmap_figure(models[methods[0]], data_root, os.path.join(out_dir, "heatmaps.png"), settings)
    report_path = os.path.join(out_dir, "report.md")
    timings["total"] = sum(timings.values())
    write_text(report_path, report_markdown(results, timings, settings, summary))
    write_text(os.path.join(out_dir, "results.json"),
                json.dumps({"results": dict(results), "timings": timings, "settings": settings}, indent=1,
                           default=float))
    print(open(report_path).read().split("## Settings")[0])
    print(f"report:   {report_path}\nheatmaps: {figure_path}")
    return report_path
