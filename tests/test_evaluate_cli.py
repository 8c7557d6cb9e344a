"""`avloc evaluate --heatmaps` on a tiny dataset root: metrics.json, plots, skips and clear errors."""

import json

import cv2
import numpy as np
import pytest
from sklearn.metrics import auc as sklearn_auc

from keras_avloc.cli import main


def reference_ciou(heatmap, gt_map):
    value = heatmap.copy()
    if value.max() - value.min() != 0:
        value = (value - value.min()) / (value.max() - value.min())
    threshold = np.sort(value.flatten())[int(value.size * 0.5)]
    infer = (value >= threshold).astype(float)
    return np.sum(infer * gt_map) / (np.sum(gt_map) + np.sum(infer * (gt_map == 0)))


def reference_gt(boxes, size=224):
    gt = np.zeros((size, size))
    for box in boxes:
        x1, y1, x2, y2 = [int(size * max(v, 0)) for v in box]
        gt[y1:y2, x1:x2] = 1
    return gt


def make_root(tmp_path, count=6, masks=True):
    """Frames, boxes and (with `masks`) a 224 x 224 mask per clip: an ellipse inside its box, so the mask
    rule (stamps) and the box rule (vggss) give different ground truths."""
    rng = np.random.default_rng(0)
    root = tmp_path / "root"
    (root / "frames").mkdir(parents=True)
    (root / "masks").mkdir()
    records = []
    for i in range(count):
        name = f"clip_{i:02d}"
        cv2.imwrite(str(root / "frames" / f"{name}.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        x1, y1 = rng.uniform(0, 0.5, 2)
        record = {"file": name, "class": "dog", "bbox": [[x1, y1, x1 + 0.4, y1 + 0.45]], "kind": "single"}
        if masks:
            mask = np.zeros((224, 224), np.uint8)
            centre = (int(224 * (x1 + 0.2)), int(224 * (y1 + 0.225)))
            cv2.ellipse(mask, centre, (40, 45), 0, 0, 360, 255, -1)
            cv2.imwrite(str(root / "masks" / f"{name}.png"), mask)
            record["mask"] = f"masks/{name}.png"
        records.append(record)
    records.append({"file": "silent_00", "class": "none", "bbox": [], "kind": "silent"})
    records.append({"file": "no_heatmap", "class": "dog", "bbox": [[0, 0, 1, 1]]})
    if masks:
        full = np.full((224, 224), 255, np.uint8)
        cv2.imwrite(str(root / "masks" / "no_heatmap.png"), full)
        records[-1]["mask"] = "masks/no_heatmap.png"
    (root / "test.json").write_text(json.dumps(records))
    return root, records


def test_evaluate_saved_heatmaps_writes_metrics_and_plots(tmp_path, capsys):
    root, records = make_root(tmp_path)
    rng = np.random.default_rng(1)
    files = [r["file"] for r in records[:7]] + ["not_in_split"]
    heatmaps = rng.random((len(files), 224, 224)).astype(np.float32)
    np.savez(tmp_path / "maps.npz", files=np.array(files), heatmaps=heatmaps)
    out = tmp_path / "out"
    code = main(["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--protocol", "stamps",
                 "--baselines", "--out", str(out), "--no-progress"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    masks = [cv2.imread(str(root / records[i]["mask"]), cv2.IMREAD_GRAYSCALE) > 127 for i in range(6)]
    cious = [reference_ciou(heatmaps[i], reference_gt(records[i]["bbox"])) for i in range(6)]  # boxes
    mask_ious = []
    for heatmap, mask in zip(heatmaps[:6], masks):  # the exact masks: mask IoU of the top-half region
        value = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min())
        top = value >= np.sort(value.ravel())[value.size // 2]
        mask_ious.append(np.sum(top & mask) / np.sum(top | mask))
    model = metrics["model"]
    assert model["num_samples"] == 7 and model["num_evaluated"] == 6
    assert model["ciou@0.5"] == pytest.approx(np.mean(np.array(cious) >= 0.5))
    fractions = [np.sum(np.array(cious) >= 0.05 * i) / 6 for i in range(21)]
    assert model["auc"] == pytest.approx(sklearn_auc([0.05 * i for i in range(21)], fractions))
    assert model["mean_ciou"] == pytest.approx(np.mean(cious))
    assert model["mask_iou"] == pytest.approx(np.mean(mask_ious)) and "extended" in model
    assert set(metrics["baselines"]) == {"center", "random"}
    assert metrics["skipped"]["heatmaps_without_record"] == 1 and metrics["skipped"]["records_without_heatmap"] == 1
    for name in ("success_curve.png", "best_worst.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| center |" in printed


def test_evaluate_multi_source_heatmaps(tmp_path):
    root = tmp_path / "mix"
    root.mkdir()
    left, right = [[0.0, 0.0, 0.5, 1.0]], [[0.5, 0.0, 1.0, 1.0]]
    records = [
        {"file": f"mix_{i}", "class": "duet", "bbox": left + right, "kind": "mixture",
         "sources": [{"class": "cello", "bbox": left}, {"class": "guitar", "bbox": right}]}
        for i in range(3)
    ]
    (root / "test.json").write_text(json.dumps(records))
    maps = np.zeros((3, 2, 8, 8), np.float32)
    maps[:, 0, :, :4] = 1
    maps[:, 1, :, 4:] = 1
    np.savez(tmp_path / "maps.npz", files=np.array([r["file"] for r in records]), heatmaps=maps)
    assert main(["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--protocol",
                 "music-duet", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["model"]["multi_source"]["ciou@0.3"] == 1.0
    assert metrics["model"]["multi_source"]["piap"] == pytest.approx(1.0)


def test_evaluate_errors_name_the_file_and_fix(tmp_path, capsys):
    root, records = make_root(tmp_path, count=2)
    assert main(["evaluate", "--heatmaps", str(tmp_path / "x.npz"), "--data", str(root), "--split", "val",
                 "--out", str(tmp_path / "o")]) == 2
    assert "val.json: no such split file" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", names=np.array(["a"]))
    assert main(["evaluate", "--heatmaps", str(tmp_path / "bad.npz"), "--data", str(root), "--out", str(tmp_path / "o")]) == 2
    assert "np.savez" in capsys.readouterr().err
    np.savez(tmp_path / "nan.npz", files=np.array(["clip_00"]), heatmaps=np.full((1, 7, 7), np.nan))
    assert main(["evaluate", "--heatmaps", str(tmp_path / "nan.npz"), "--data", str(root), "--out", str(tmp_path / "o")]) == 2
    assert "NaN" in capsys.readouterr().err
    np.savez(tmp_path / "other.npz", files=np.array(["zzz"]), heatmaps=np.zeros((1, 7, 7)))
    assert main(["evaluate", "--heatmaps", str(tmp_path / "other.npz"), "--data", str(root), "--out", str(tmp_path / "o")]) == 2
    assert "--split" in capsys.readouterr().err


def test_evaluate_model_with_a_stub_pipeline(tmp_path, monkeypatch):
    """evaluate_model's bookkeeping (indices → records, baselines, outputs) without TensorFlow."""
    import keras_avloc.data
    from keras_avloc.evaluation import evaluate_model

    root, records = make_root(tmp_path, count=4, masks=False)
    gt = np.stack([reference_gt(r["bbox"]) for r in records]).astype(np.float32)
    images = np.random.default_rng(2).normal(size=(4, 224, 224, 3)).astype(np.float32)

    def fake_make_dataset(root_arg, split="test", batch_size=16, **kwargs):
        order = [2, 0, 3, 1]  # the pipeline's order need not be the file order: "index" maps back
        for start in range(0, 4, batch_size):
            index = np.array(order[start : start + batch_size])
            yield {"image": images[index], "audio": np.zeros((len(index), 257, 20, 1))}, {"gt_map": gt[index], "index": index}

    monkeypatch.setattr(keras_avloc.data, "make_dataset", fake_make_dataset, raising=False)

    class StubModel:
        name = "stub"

        def localize(self, image, audio, image_size=None):
            assert image_size == (224, 224)  # evaluation always asks for 224 x 224 maps
            return np.asarray(image)[..., 0]

        def image_encoder(self, image, training=False):
            return np.asarray(image)[:, ::32, ::32, :]

    metrics = evaluate_model(StubModel(), str(root), "test", "vggss", str(tmp_path / "out"), batch_size=3, progress=False)
    cious = [reference_ciou(images[i, ..., 0], gt[i]) for i in range(4)]
    assert metrics["model"]["mean_ciou"] == pytest.approx(np.mean(cious))
    assert set(metrics["baselines"]) == {"center", "random", "objectness"}
    samples = json.loads((tmp_path / "out" / "per_sample.json").read_text())
    assert [row["name"] for row in samples] == ["clip_02", "clip_00", "clip_03", "clip_01"]
    assert [row["ciou"] for row in samples] == pytest.approx([cious[2], cious[0], cious[3], cious[1]])
    assert (tmp_path / "out" / "best_worst.png").exists()


def test_flickr_protocol_uses_soft_consensus(tmp_path):
    from keras_avloc.evaluation import evaluate_heatmaps

    root = tmp_path / "flickr"
    root.mkdir()
    # Two annotators: columns [0, 112) and [56, 168) -> consensus 0.5 / 1.0 / 0.5.
    records = [{"file": "f0", "class": "guitar", "bbox": [[0, 0, 0.5, 1], [0.25, 0, 0.75, 1]]}]
    (root / "test.json").write_text(json.dumps(records))
    heat = np.zeros((1, 224, 224), np.float32)
    heat[0, :, :112] = 1.0  # top 50% = the left half
    np.savez(tmp_path / "maps.npz", files=np.array(["f0"]), heatmaps=heat)
    metrics = evaluate_heatmaps(str(tmp_path / "maps.npz"), str(root), protocol="flickr", progress=False)
    gt = np.zeros((224, 224))
    gt[:, :112] += 1
    gt[:, 56:168] += 1
    gt = np.minimum(gt / 2, 1)
    assert metrics["model"]["mean_ciou"] == pytest.approx(reference_ciou(heat[0], gt))
    assert metrics["model"]["mean_ciou"] == pytest.approx((56 * 0.5 + 56 * 1.0) * 224 / (gt.sum() + 0))


