"""AVGN wired into `build_model`, `train()` / `avloc train`, and the per-source mixture evaluation."""

import itertools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from tiny_av_data import write_colour_tone_split

TINY_AVGN = {"embed_dim": 16, "depth": 1, "num_heads": 2, "backbone_kwargs": {"width": 8}}


# --------------------------------------------------------------------------- independent references
def ref_minmax(value):
    span = value.max() - value.min()
    return (value - value.min()) / span if span else value


def ref_ciou(heatmap, gt_map):
    """cIoU with the median threshold of the min-max normalised map (EZ-VSL / AVGN evaluation)."""
    value = ref_minmax(heatmap.astype(np.float64))
    threshold = np.sort(value.flatten())[int(value.size * 0.5)]
    infer = (value >= threshold).astype(float)
    return np.sum(infer * gt_map) / (np.sum(gt_map) + np.sum(infer * (gt_map == 0)))


def ref_box_map(box, size=224):
    gt = np.zeros((size, size))
    x1, y1, x2, y2 = [int(size * v) for v in box]
    gt[y1:y2, x1:x2] = 1
    return gt


def ref_piap(maps, gts):
    """Mean over mixtures of the best-permutation mean pixel AP (GT > 0.5 as y_true, map as score)."""
    values = []
    for sample_maps, sample_gts in zip(maps, gts):
        k = len(sample_gts)
        values.append(max(
            np.mean([average_precision_score(sample_gts[i].ravel() > 0.5, sample_maps[p[i]].ravel()) for i in range(k)])
            for p in itertools.permutations(range(k))
        ))
    return float(np.mean(values))


def ref_cap(class_maps, gts, class_ids):
    """Per class: AP over the pooled pixels of the samples where it sounds (maps min-max normalised)."""
    pooled = {}
    for b in range(len(class_ids)):
        for k, c in enumerate(class_ids[b]):
            scores, labels = pooled.setdefault(int(c), ([], []))
            scores.append(ref_minmax(class_maps[b][k]).ravel())
            labels.append(gts[b][k].ravel() > 0.5)
    return float(np.mean([average_precision_score(np.concatenate(labels), np.concatenate(scores))
                          for scores, labels in pooled.values()]))


# --------------------------------------------------------------------------- tiny data
def write_tiny_split(root, classes=("red", "blue", "green"), count=6, size=64, seconds=0.5, split="train"):
    return write_colour_tone_split(root, classes, count, size, seconds, split, seed=len(split), prefix=split,
                                   audio_key=True)


def test_avgn_is_registered_and_trains_on_random_mixtures_then_evaluates_via_cli(tmp_path, capsys):
    from keras_avloc.cli import main
    from keras_avloc.models import AVGN, build_model, get_method_class, method_names
    from keras_avloc.training import train

    assert "avgn" in method_names() and get_method_class("avgn") is AVGN and AVGN.frontend == "lvs"
    assert AVGN.default_mix_sources == 2 and AVGN.needs_class_names
    assert build_model("AVGN", num_classes=3, **TINY_AVGN).num_classes == 3

    data = tmp_path / "data"
    write_tiny_split(str(data), count=4)
    write_tiny_split(str(data), count=4, split="val")
    out = tmp_path / "run"
    model, history = train("avgn", str(data), str(out), epochs=1, batch_size=4, image_size=64, clip_seconds=0.5,
                           model_kwargs=TINY_AVGN, seed=0, verbose=0, run_eagerly=True, heatmap_every=5)
    assert isinstance(model, AVGN) and model.class_names == ["blue", "green", "red"]
    for term in ("loss", "loc_loss", "token_loss", "class_loss"):
        assert np.isfinite(history.history[term][0]), term
    state = json.loads((out / "train_state.json").read_text())
    assert state["settings"]["mix_sources"] == 2 and state["settings"]["method"] == "avgn"

    # a two-source mixture split built from the val clips: the audio of a record is the sum of its sources
    import soundfile

    singles = json.loads((data / "val.json").read_text())
    mixtures = []
    for first, second in [(0, 1), (1, 2), (2, 3)]:
        a, b = singles[first], singles[second]
        wave = soundfile.read(str(data / a["audio"]))[0] + soundfile.read(str(data / b["audio"]))[0]
        name = f"mix_{first}{second}"
        soundfile.write(str(data / "audio" / f"{name}.wav"), (0.5 * wave).astype(np.float32), 16000)
        os.link(data / "frames" / f"{a['file']}.jpg", data / "frames" / f"{name}.jpg")
        mixtures.append({"file": name, "class": a["class"], "bbox": a["bbox"] + b["bbox"], "kind": "mixture",
                         "sources": [{"class": s["class"], "bbox": s["bbox"], "audio": s["audio"]} for s in (a, b)]})
    (data / "test_mix.json").write_text(json.dumps(mixtures))
    code = main(["evaluate", "--checkpoint", str(out / "model.keras"), "--data", str(data), "--split", "test_mix",
                 "--protocol", "music-duet", "--out", str(tmp_path / "eval"), "--no-progress", "--batch-size", "2"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    multi = metrics["model"]["multi_source"]
    assert multi["num_mixtures"] == 3 and multi["cap_classes"] >= 1
    assert metrics["source"]["per_source_maps"] == "predicted classes"
    assert metrics["model"]["auc"] > 0.0  # the union ground truth comes from the records' boxes
    # the printed per-source line is the one in metrics.json (metric values themselves: see the numpy
    # references of test_per_source_metrics_match_numpy_reference)
    assert (f"per-source: cIoU@0.3 {multi['ciou@0.3']:.4f}  AUC {multi['auc']:.4f}  PIAP {multi['piap']:.4f}  "
            f"CAP {multi['cap']:.4f}  (3 mixtures)") in capsys.readouterr().out


def test_ready_dataset_without_class_names_is_a_clear_error(tmp_path):
    import tensorflow as tf

    from keras_avloc.training import TrainingError, train

    x = {"image": np.zeros((2, 64, 64, 3), np.float32), "audio": np.zeros((2, 257, 20, 1), np.float32)}
    dataset = tf.data.Dataset.from_tensors((x, {"labels": np.zeros((2, 2), np.int32)}))
    with pytest.raises(TrainingError, match="class_names"):
        train("avgn", out_dir=str(tmp_path / "run"), dataset=dataset, model_kwargs=TINY_AVGN, verbose=0)


# --------------------------------------------------------------------------- per-source evaluation
CLASSES = ["cello", "dog", "guitar"]
LEFT, RIGHT, TOP = [0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0], [0.1, 0.0, 0.9, 0.4]
MIXTURES = [  # (source boxes, source classes)
    ([LEFT, RIGHT], ["cello", "guitar"]),
    ([TOP, RIGHT], ["dog", "cello"]),
    ([RIGHT, LEFT], ["guitar", "dog"]),
]
PREDICTED = np.array([[2, 0], [1, 2], [0, 1]])  # sample 0: both right but swapped; 1: one right; 2: none right


def _class_map(sample, class_id, size=224):
    """A known map per (sample, class): a smooth random field, different for every pair."""
    rng = np.random.default_rng(100 * sample + class_id)
    small = rng.random((7, 7)).astype(np.float32)
    return np.kron(small, np.ones((32, 32), np.float32))


def _mixture_root(tmp_path):
    import cv2

    root = tmp_path / "mix"
    (root / "frames").mkdir(parents=True)
    records = []
    for i, (boxes, classes) in enumerate(MIXTURES):
        name = f"mix_{i}"
        cv2.imwrite(str(root / "frames" / f"{name}.jpg"), np.full((32, 32, 3), 128, np.uint8))
        records.append({"file": name, "class": classes[0], "bbox": boxes, "kind": "mixture",
                        "sources": [{"class": c, "bbox": [b]} for b, c in zip(boxes, classes)]})
    (root / "test_mix.json").write_text(json.dumps(records))
    return root, records


class _Dataset:
    def __init__(self, batch_size):
        self.batch_size, self.class_list = batch_size, CLASSES

    def __iter__(self):
        order = np.array([1, 2, 0])
        for start in range(0, 3, self.batch_size):
            index = order[start : start + self.batch_size]
            images = np.zeros((len(index), 224, 224, 3), np.float32) + index[:, None, None, None]
            yield ({"image": images, "audio": np.zeros((len(index), 257, 20, 1))},
                   {"gt_map": np.zeros((len(index), 224, 224), np.float32), "index": index})


class FakeAVGN:
    """Per-class maps are `_class_map(sample, class)`; the predicted classes are `PREDICTED`."""

    name = "fake_avgn"
    class_names = CLASSES

    def localize_sources(self, images, audio, n_sources=2, class_ids=None, min_probability=None, image_size=None):
        samples = np.asarray(images)[:, 0, 0, 0].astype(int)
        ids = PREDICTED[samples] if class_ids is None else np.asarray(class_ids)
        maps = np.stack([[_class_map(s, c) for c in row] for s, row in zip(samples, ids)])
        return maps, ids, np.zeros((len(samples), len(CLASSES)))

    def localize(self, images, audio, image_size=None):
        return self.localize_sources(images, audio)[0].max(axis=1)


class FakeSingleMap:
    name = "fake_single"

    def localize(self, images, audio, image_size=None):
        samples = np.asarray(images)[:, 0, 0, 0].astype(int)
        return np.stack([_class_map(s, 7) for s in samples])


@pytest.mark.parametrize("model_kind", ["avgn_predicted", "avgn_gt", "single"])
def test_per_source_metrics_match_numpy_reference(tmp_path, monkeypatch, model_kind):
    import keras_avloc.data
    from keras_avloc.evaluation import evaluate_model

    root, records = _mixture_root(tmp_path)
    monkeypatch.setattr(keras_avloc.data, "make_dataset", lambda *a, batch_size=16, **k: _Dataset(batch_size),
                        raising=False)
    model = FakeSingleMap() if model_kind == "single" else FakeAVGN()
    metrics = evaluate_model(model, str(root), "test_mix", "music-duet", None, batch_size=2, baselines=True,
                             progress=False, class_conditioned=model_kind == "avgn_gt")

    true_ids = [[CLASSES.index(c) for c in classes] for _, classes in MIXTURES]
    gts = [[ref_box_map(b) for b in boxes] for boxes, _ in MIXTURES]
    class_maps = [[_class_map(s, c) for c in true_ids[s]] for s in range(3)]
    if model_kind == "single":
        class_maps = [[_class_map(s, 7)] * 2 for s in range(3)]
        source_maps = class_maps
    elif model_kind == "avgn_gt":
        source_maps = class_maps
    else:  # predicted slots paired with the source of the same class, the rest in order
        pairing = [[1, 0], [0, 1], [0, 1]]
        source_maps = [[_class_map(s, PREDICTED[s][pairing[s][k]]) for k in range(2)] for s in range(3)]
    cious = np.array([ref_ciou(source_maps[s][k], gts[s][k]) for s in range(3) for k in range(2)])
    thresholds = np.linspace(0, 1, 21)
    expected = {
        "ciou@0.3": np.mean(cious >= 0.3),
        "auc": np.trapezoid([np.mean(cious >= t) for t in thresholds], thresholds),
        "mean_ciou": cious.mean(),
        "piap": ref_piap(source_maps, gts),
        "cap": ref_cap(class_maps, gts, true_ids),
    }
    multi = metrics["model"]["multi_source"]
    for key, value in expected.items():
        assert multi[key] == pytest.approx(value, abs=1e-6), key
    assert multi["num_mixtures"] == 3 and multi["cap_classes"] == 3

    centre = metrics["baselines"]["center"]["multi_source"]
    from keras_avloc.metrics.baselines import center_prior

    prior = center_prior(1, 224)[0]
    assert centre["cap"] == pytest.approx(ref_cap([[prior, prior]] * 3, gts, true_ids), abs=1e-6)
    assert centre["piap"] == pytest.approx(ref_piap([[prior, prior]] * 3, gts), abs=1e-6)


def test_cap_rewards_class_aware_maps_over_a_shared_map():
    """Sanity of the metric itself: exact per-class maps give CAP 1; one shared map for both sources does not."""
    from keras_avloc.metrics import Evaluator

    gts = np.stack([[ref_box_map(LEFT), ref_box_map(RIGHT)]]).astype(np.float32)
    exact, shared = Evaluator("stamps-mix"), Evaluator("stamps-mix")
    union = gts.max(axis=1)
    exact.update(union, union, source_heatmaps=gts, source_gt_maps=gts, class_heatmaps=gts, class_ids=[[0, 1]])
    both = np.stack([union, union], axis=1)
    shared.update(union, union, source_heatmaps=both, source_gt_maps=gts, class_heatmaps=both, class_ids=[[0, 1]])
    assert exact.result()["multi_source"]["cap"] == pytest.approx(1.0)
    assert shared.result()["multi_source"]["cap"] == pytest.approx(ref_cap(both, gts, [[0, 1]]))
    assert shared.result()["multi_source"]["cap"] < 0.6
