"""The field's newer protocols for every method a demo trained, on the demo's stamps build.

* extended: SLAVC's table on `test_pairs` (each test scene plus its frame with another class's recording);
* IS3-style: each source of a two-source mixture scored with its own recording (`test_mix_is3`; the mixtures are
  rendered into the demo's build, same recipe and backgrounds, if missing);
* negative audio: silence, noise and another class's clip for every test frame, universal thresholds chosen on
  val.

Each table has the centre prior, random maps (where the protocol defines them) and objectness from the demo's
stand-in ResNet, beside the models. AVGN is scored with the classes it predicts from the audio (no protocol here
tells it the class).

Usage (after `avloc demo --out DEMO`; evaluation only, ~1 minute per method on 2 cores):
    python benchmarks/protocol_tables.py DEMO [--methods lvs,ezvsl,avgn] [--passes 3] [--n-mix 160]

Prints the three Markdown tables and writes DEMO/runs/protocol_tables.json.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _build_mixtures(data_root, count):
    from keras_avloc.data.stamps import build_stamps
    from keras_avloc.demo import PRESETS

    preset = PRESETS["default"]
    build_stamps(data_root, n_train=preset["n_train"], n_val=preset["n_val"], n_test=preset["n_test"],
                 n_test_mix=count, n_train_mix=0, n_test_ext=0, n_speech=0, size=preset["size"], seed=0, workers=2,
                 classes=preset.get("classes"), n_val_unseen=preset["n_val_unseen"],
                 n_test_unseen=preset["n_test_unseen"], variety=preset.get("variety", "narrow"),
                 n_val_ood=preset.get("n_val_ood", 0), n_test_ood=preset.get("n_test_ood", 0))


def _row(values, columns):
    return " | ".join(f"{values[key]:.3f}" if isinstance(values.get(key), float) else "-" for _, key in columns)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", help="the demo's --out folder (data/ and runs/)")
    parser.add_argument("--methods", default="lvs,ezvsl,avgn", help="runs/<name>/model.keras to score")
    parser.add_argument("--passes", type=int, default=3, help="negative-audio passes (the official code: 10)")
    parser.add_argument("--n-mix", type=int, default=160, help="two-source test scenes for the IS3-style table")
    args = parser.parse_args()

    from keras_avloc.data import load_split, write_split
    from keras_avloc.data.protocols import nonsounding_pairs, per_source_records
    from keras_avloc.demo import PRESETS, objectness_encoder, standin_path
    from keras_avloc.evaluation import evaluate_model
    from keras_avloc.evaluation.extended import TABLE_COLUMNS as EXTENDED
    from keras_avloc.evaluation.is3 import TABLE_COLUMNS as IS3
    from keras_avloc.evaluation.is3 import evaluate_is3
    from keras_avloc.evaluation.negative_audio import OFFICIAL_SEEDS, choose_threshold, evaluate_negative_audio
    from keras_avloc.evaluation.negative_audio import TABLE_COLUMNS as NEGATIVE
    from keras_avloc.models import load_model

    root = os.path.abspath(os.path.join(args.demo, "data"))
    start = time.time()
    if not os.path.exists(os.path.join(root, "test_pairs.json")):
        write_split(load_split(root, "test") + nonsounding_pairs(load_split(root, "test"), seed=0),
                    os.path.join(root, "test_pairs.json"))
    if not os.path.exists(os.path.join(root, "test_mix.json")):
        _build_mixtures(root, args.n_mix)
    if not os.path.exists(os.path.join(root, "test_mix_is3.json")):
        write_split(per_source_records(load_split(root, "test_mix")), os.path.join(root, "test_mix_is3.json"))
    print(f"splits ready in {time.time() - start:.0f} s")
    encoder = objectness_encoder(standin_path(root, PRESETS["default"]), PRESETS["default"])
    results = {"extended": {}, "is3": {}, "negative_audio": {}, "seconds": {}}
    for name in args.methods.split(","):
        path = os.path.join(args.demo, "runs", name, "model.keras")
        if not os.path.exists(path):
            print(f"skipping {name}: {path} not found")
            continue
        begin = time.time()
        model = load_model(path, compile=False)
        first = not results["extended"]
        extended = evaluate_model(model, root, split="test_pairs", protocol="stamps", batch_size=32, baselines=first,
                                  objectness_encoder=encoder, progress=False)
        results["extended"][name] = extended["model"]["extended_table"]
        is3 = evaluate_is3(model, root, load_split(root, "test_mix_is3"), batch_size=32, baselines=first,
                           progress=False, objectness_encoder=encoder)
        results["is3"][name] = is3["model"]
        baselines = ("center", "objectness") if first else ()
        thresholds, _ = choose_threshold(model, root, load_split(root, "val"), batch_size=32, progress=False,
                                         baselines=baselines, encoder=encoder)
        negative = evaluate_negative_audio(model, root, load_split(root, "test"), thresholds, batch_size=32,
                                           seeds=OFFICIAL_SEEDS[:args.passes], progress=False, encoder=encoder,
                                           chosen_on="val")
        results["negative_audio"][name] = negative["model"]
        if first:
            for key, metrics in (("extended", extended), ("is3", is3), ("negative_audio", negative)):
                for baseline, row in metrics["baselines"].items():
                    results[key][baseline] = row.get("extended_table", row) if key == "extended" else row
        results["seconds"][name] = round(time.time() - begin, 1)
        print(f"{name}: {results['seconds'][name]} s")
    tables = []
    for key, columns, title in (("extended", EXTENDED, "Extended (SLAVC) on test_pairs"),
                                ("is3", IS3, "IS3-style on test_mix_is3"),
                                ("negative_audio", NEGATIVE, f"Negative audio on test ({args.passes} passes)")):
        lines = [f"### {title}", "", "| method | " + " | ".join(t for t, _ in columns) + " |",
                 "|---" * (len(columns) + 1) + "|"]
        lines += [f"| {name} | {_row(row, columns)} |" for name, row in results[key].items()]
        tables.append("\n".join(lines))
    print("\n\n".join(tables))
    with open(os.path.join(args.demo, "runs", "protocol_tables.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    print(f"total {time.time() - start:.0f} s; wrote {os.path.join(args.demo, 'runs', 'protocol_tables.json')}")


if __name__ == "__main__":
    main()
