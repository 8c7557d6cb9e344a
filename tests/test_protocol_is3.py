"""IS3 (kaistmm/SSLalignment): the real box list mapped onto a local copy, maps scored through `avloc evaluate`,
compared with the official `Evaluator_iiou` transcribed here as published (sorted maps, strict thresholds, the
file-name grouping, per-image minimum), and the IS3-style split built from mixtures."""

import json
import os

import cv2
import numpy as np
import pytest
import soundfile
from shared_data import SHARED, shared_path

from keras_avloc.cli import main
from keras_avloc.data import AnnotationError
from keras_avloc.data.protocols import is3_records

REAL = SHARED / "annotations" / "is3"
THRESHOLDS = [0.05 * i for i in range(21)]


def trapezoid(xs, ys):
    return sum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def official_is3(names, maps, boxes):
    """`validate_lvs` + `Evaluator_iiou` on maps already at 224: min-max, median / adaptive strict thresholds,
    cIoU, then CIoU / AUC per entry and iIoU / iAUC per image (entries grouped by name up to the last '_')."""
    median, adaptive, groups = [], [], {}
    for name, heatmap, box in zip(names, maps, boxes):
        h = heatmap.astype(np.float32)
        pred = (h - h.min()) / (h.max() - h.min())
        gt = np.zeros((224, 224))
        gt[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = 1
        flat = np.sort(pred.flatten())
        values = []
        for thr in (flat[int(224 * 224 / 2)], flat[224 * 224 - int((gt != 0).sum())]):
            infer = (pred > thr).astype(float)
            values.append(np.sum(infer * gt) / (np.sum(gt) + np.sum(infer * (gt == 0))))
        median.append(values[0])
        adaptive.append(values[1])
        groups.setdefault("_".join(name.split("_")[:-1]), []).append(len(median) - 1)
    table = {}
    for tag, values in (("", median), ("_adap", adaptive)):
        worst = [min(values[i] for i in members) for members in groups.values()]
        table[f"ciou{tag}@0.5"] = np.mean([v >= 0.5 for v in values])
        table[f"auc{tag}"] = trapezoid(THRESHOLDS, [np.mean([v >= t for v in values]) for t in THRESHOLDS])
        table[f"iiou{tag}@0.5"] = np.mean([v >= 0.5 for v in worst])
        table[f"iauc{tag}"] = trapezoid(THRESHOLDS, [np.mean([v >= t for v in worst]) for t in THRESHOLDS])
    table["mean_ciou"] = np.mean(median)
    return table


def local_is3(tmp_path, pairs=12):
    """The first `pairs` complete images of the real list, each entry's frame and audio written under the
    official folder names; the metadata folder holds the list reduced to those entries (authors' paths kept)."""
    shared_path("annotations")
    entries = json.loads((REAL / "synthetic3240_bbox.json").read_text())
    masks = json.loads((REAL / "synthetic3240_seg.json").read_text())
    by_group = {}
    for position, entry in enumerate(entries):
        stem = os.path.splitext(os.path.basename(entry["image"]))[0]
        by_group.setdefault("_".join(stem.split("_")[:-1]), []).append(position)
    chosen = sorted(p for members in list(by_group.values())[:pairs] for p in members)
    root = tmp_path / "is3"
    for folder in ("visual_frames", "audio_wav", "gt_masks", "metadata"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(1)
    for position in chosen:
        stem = os.path.splitext(os.path.basename(entries[position]["image"]))[0]
        cv2.imwrite(str(root / "visual_frames" / f"{stem}.jpg"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        soundfile.write(str(root / "audio_wav" / f"{stem}.wav"), rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
        mask = np.zeros((224, 224), np.uint8)
        x1, y1, x2, y2 = (int(v) for v in entries[position]["gt_box"])
        mask[y1:y2, x1:x2] = 255
        cv2.imwrite(str(root / "gt_masks" / f"{stem}.jpg"), mask)
    (root / "metadata" / "synthetic3240_bbox.json").write_text(json.dumps([entries[p] for p in chosen]))
    (root / "metadata" / "synthetic3240_seg.json").write_text(json.dumps([masks[p] for p in chosen]))
    return root, [entries[p] for p in chosen]


def test_is3_records_map_the_authors_paths_by_file_name_and_name_what_is_missing(tmp_path):
    root, entries = local_is3(tmp_path, pairs=4)
    records, missing = is3_records(str(root), str(root / "metadata"), masks=True)
    assert missing == {} and len(records) == 8
    first = records[0]
    assert first["image"] == str(root / "visual_frames" / f"{first['file']}.jpg")
    assert first["audio"] == str(root / "audio_wav" / f"{first['file']}.wav")
    assert first["mask"] == str(root / "gt_masks" / f"{first['file']}.jpg")
    assert first["group"] == "_".join(first["file"].split("_")[:-1])
    assert sorted({len([r for r in records if r["group"] == g]) for g in {r["group"] for r in records}}) == [2]
    np.testing.assert_array_equal(first["pixel_boxes"][0], [int(v) for v in entries[0]["gt_box"]])
    os.remove(root / "audio_wav" / f"{first['file']}.wav")
    records, missing = is3_records(str(root), str(root / "metadata"))
    assert list(missing) == [first["file"]] and "audio" in missing[first["file"]] and len(records) == 7
    with pytest.raises(AnnotationError, match="synthetic3240_bbox.json: not found"):
        is3_records(str(root), str(tmp_path))


def test_is3_cli_equals_the_official_evaluator(tmp_path, capsys):
    root, entries = local_is3(tmp_path)
    names = [os.path.splitext(os.path.basename(e["image"]))[0] for e in entries]
    rng = np.random.default_rng(4)
    maps = rng.random((len(names), 14, 14)).astype(np.float32)
    for index, entry in enumerate(entries[::2]):  # some maps find their object: success rates are not all zero
        x1, y1, x2, y2 = (int(v) * 14 // 224 for v in entry["gt_box"])
        maps[2 * index, y1:y2 + 1, x1:x2 + 1] += 2.0
    np.savez(tmp_path / "maps.npz", files=np.array(names), heatmaps=maps)
    out = tmp_path / "out"
    assert main(["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--protocol", "is3",
                 "--out", str(out), "--no-progress", "--baselines"]) == 0
    assert "24 entries on 12 images (2 per image)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    torch = pytest.importorskip("torch")  # the official script upsamples with torch (bilinear, aligned corners)
    with torch.no_grad():
        up = torch.nn.functional.interpolate(torch.from_numpy(maps[:, None]), size=(224, 224), mode="bilinear",
                                             align_corners=True)[:, 0].numpy()
    expected = official_is3(names, up, [e["gt_box"] for e in entries])
    assert 0 < expected["ciou@0.5"] < 1
    for key, value in expected.items():
        assert metrics["model"][key] == pytest.approx(value, abs=1e-12), key
    assert set(metrics["baselines"]) == {"center", "random"}
    # one map for both objects of an image (the centre prior) finds at most one: iIoU <= half the cIoU successes
    centre = metrics["baselines"]["center"]
    assert centre["iiou@0.5"] <= centre["ciou@0.5"]
    # masks: the seg list's masks equal the boxes here, so the scores do not move
    assert main(["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--protocol", "is3",
                 "--mask-ground-truth", "--out", str(tmp_path / "masks"), "--no-progress"]) == 0
    with_masks = json.loads((tmp_path / "masks" / "metrics.json").read_text())
    assert with_masks["ground_truth"] == "mask" and metrics["ground_truth"] == "box"
    # JPEG masks of the boxes: edges blur a little, the success rate hardly moves
    assert with_masks["model"]["ciou@0.5"] == pytest.approx(metrics["model"]["ciou@0.5"], abs=0.05)


def test_per_source_split_and_a_checkpoint_on_it(tmp_path, capsys):
    """Mixture scenes in the keras-avloc layout -> one entry per source (`avloc data pairs --per-source`) -> a
    tiny EZ-VSL scored on it with the baselines."""
    from keras_avloc.data import load_split
    from keras_avloc.models import EZVSL

    root = tmp_path / "mix"
    for folder in ("frames", "audio"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(2)
    split = []
    for index in range(3):
        scene = f"mix_{index}"
        cv2.imwrite(str(root / "frames" / f"{scene}.jpg"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
        sources = []
        for number, (cls, box) in enumerate((("dog", [0.0, 0.1, 0.4, 0.9]), ("cat", [0.6, 0.2, 1.0, 0.8]))):
            wave = 0.2 * np.sin(2 * np.pi * (300 + 400 * number) * np.arange(8000) / 16000)
            soundfile.write(str(root / "audio" / f"{scene}_s{number}.wav"), wave.astype(np.float32), 16000)
            sources.append({"class": cls, "bbox": [box], "audio": f"audio/{scene}_s{number}.wav"})
        sources.append({"class": "owl", "bbox": [], "audio": f"audio/{scene}_s1.wav", "offscreen": True})
        soundfile.write(str(root / "audio" / f"{scene}.wav"), rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
        split.append({"file": scene, "class": "dog", "bbox": [s["bbox"][0] for s in sources[:2]], "kind": "mixture",
                      "sources": sources})
    (root / "test_mix.json").write_text(json.dumps(split))
    assert main(["data", "pairs", str(root), "--split", "test_mix", "--per-source"]) == 0
    entries = load_split(str(root), "test_mix_is3")
    assert [e["file"] for e in entries] == ["mix_0_s0", "mix_0_s1", "mix_1_s0", "mix_1_s1", "mix_2_s0", "mix_2_s1"]
    assert entries[1]["frame_id"] == "mix_0" and entries[1]["image"].endswith("frames/mix_0.jpg")
    assert entries[1]["audio"].endswith("audio/mix_0_s1.wav") and entries[1]["class"] == "cat"
    np.testing.assert_allclose(entries[1]["boxes"], [[0.6, 0.2, 1.0, 0.8]])
    model = EZVSL(embed_dim=16, backbone_kwargs={"width": 8})
    model({"image": np.zeros((1, 64, 64, 3), np.float32), "audio": np.zeros((1, 257, 100, 1), np.float32)})
    model.save(tmp_path / "ezvsl.keras")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ezvsl.keras"), "--data", str(root), "--protocol", "is3",
                 "--image-size", "64", "--clip-seconds", "0.5", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "6 entries on 3 images (2 per image)" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics["baselines"]) == {"center", "random", "objectness"}
    per_sample = json.loads((tmp_path / "out" / "per_sample.json").read_text())
    assert {row["image"] for row in per_sample} == {"mix_0", "mix_1", "mix_2"}
