"""AVGN vs EZ-VSL on the stamps two-source mixtures (`test_mix`): CAP, PIAP, per-source cIoU@0.3 / AUC.

Reduced-cost protocol so one training fits in ~8 minutes on 2 CPU cores: 112 px images, 1 s clips,
ResNet-18 width 16, batch 32. AVGN trains on random two-class mixtures of the single-source train split
(`mix_sources=2`, the frame is the first source's); EZ-VSL trains on the single-source clips.

`--classes demo` uses the demo's eight sounding classes (`keras_avloc.demo.DEMO_CLASSES`; 200 training
scenes a class, learnable from scratch in this budget) in its own data and run folders; `--classes all`
(default) uses all 65.

Usage (one training at a time; each step is resumable; add --classes demo to every step for the subset):
    python benchmarks/avgn_stamps_mix.py build
    python benchmarks/avgn_stamps_mix.py train --method ezvsl --epochs 4 --lr 1e-3
    python benchmarks/avgn_stamps_mix.py train --method avgn --epochs 4 --lr 1e-3
    python benchmarks/avgn_stamps_mix.py evaluate --method avgn --lr 1e-3 --split val   # pick the lr here
    python benchmarks/avgn_stamps_mix.py evaluate --method avgn --lr 1e-3 [--class-conditioned]
    python benchmarks/avgn_stamps_mix.py table
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = {"all": ("stamps-avgn", "avgn-stamps-mix"), "demo": ("stamps-avgn-demo", "avgn-stamps-mix-demo")}
DATA, RUNS = None, None  # set from --classes in main()
IMAGE_SIZE, CLIP_SECONDS, WIDTH, BATCH = 112, 1.0, 16, 32
AVGN_KWARGS = {"embed_dim": 128, "depth": 1, "num_heads": 4}


def build(args):
    from keras_avloc.data.stamps import build_stamps

    from keras_avloc.demo import DEMO_CLASSES

    summary = build_stamps(DATA, n_train=1600, n_val=100, n_test=50, n_test_mix=200, n_test_ext=0, size=224, seed=1,
                           workers=2, classes=DEMO_CLASSES if args.classes == "demo" else None)
    print(f"built {DATA}: {summary.get('seconds', 0):.0f} s, {len(summary['classes'])} classes")


def train_one(args):
    import tensorflow as tf

    from keras_avloc.training import train

    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    kwargs = {"backbone_kwargs": {"width": WIDTH}}
    if args.method == "avgn":
        kwargs.update(AVGN_KWARGS)
    else:
        kwargs["embed_dim"] = AVGN_KWARGS["embed_dim"]
    out = os.path.join(RUNS, f"{args.method}_lr{args.lr:g}_e{args.epochs}")
    started = time.time()
    _, history = train(args.method, DATA, out, epochs=args.epochs, batch_size=BATCH, val_split="val",
                       learning_rate=args.lr, image_size=IMAGE_SIZE, clip_seconds=CLIP_SECONDS, model_kwargs=kwargs,
                       seed=1, verbose=2, heatmap_every=args.epochs)
    print(f"{args.method}: {args.epochs} epochs in {time.time() - started:.0f} s -> {out}")
    if history is not None:
        print({key: [round(v, 4) for v in values] for key, values in history.history.items()})


def evaluate_one(args):
    from keras_avloc.evaluation import evaluate_model
    from keras_avloc.models import load_model

    run = os.path.join(RUNS, f"{args.method}_lr{args.lr:g}_e{args.epochs}")
    model = load_model(os.path.join(run, "model.keras"), compile=False)
    tag = "gtclass" if args.class_conditioned else "predicted"
    started = time.time()
    # the learning rate is picked on the single-source val split ("stamps" protocol), never on test_mix
    protocol = "stamps-mix" if args.split.endswith("mix") else "stamps"
    metrics = evaluate_model(model, DATA, split=args.split, protocol=protocol,
                             out_dir=os.path.join(run, f"eval_{args.split}_{tag}"), batch_size=BATCH,
                             image_size=IMAGE_SIZE, clip_seconds=CLIP_SECONDS, class_conditioned=args.class_conditioned)
    print(f"evaluated in {time.time() - started:.0f} s")
    print(json.dumps({"model": metrics["model"].get("multi_source"),
                      "center": metrics["baselines"].get("center", {}).get("multi_source")}, indent=1))
    print(metrics["table"])


def table(args):
    rows = []
    for name in sorted(os.listdir(RUNS)):
        for sub in sorted(os.listdir(os.path.join(RUNS, name))):
            path = os.path.join(RUNS, name, sub, "metrics.json")
            if sub.startswith("eval_") and os.path.isfile(path):
                with open(path) as handle:
                    metrics = json.load(handle)
                rows.append((f"{name}/{sub}", metrics["model"]))
                rows += [(f"  {base} baseline", m) for base, m in metrics["baselines"].items()]
    print("| run | CAP | PIAP | src cIoU@0.3 | src AUC | union cIoU@0.5 | union AUC |")
    print("|---|---|---|---|---|---|---|")
    for name, m in rows:
        ms = m.get("multi_source", {})
        cells = [ms.get("cap"), ms.get("piap"), ms.get("ciou@0.3"), ms.get("auc"), m.get("ciou@0.5"), m.get("auc")]
        print(f"| {name} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["build", "train", "evaluate", "table"])
    parser.add_argument("--method", default="avgn", choices=["avgn", "ezvsl"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--split", default="test_mix")
    parser.add_argument("--class-conditioned", action="store_true")
    parser.add_argument("--classes", choices=sorted(FOLDERS), default="all",
                        help="all 65 sounding classes, or the demo's eight (separate data and run folders)")
    args = parser.parse_args()
    global DATA, RUNS
    DATA = os.path.join(REPO, "datasets", FOLDERS[args.classes][0])
    RUNS = os.path.join(REPO, "runs", FOLDERS[args.classes][1])
    {"build": build, "train": train_one, "evaluate": evaluate_one, "table": table}[args.step](args)


if __name__ == "__main__":
    main()
