"""Extended VGG-SS / Extended Flickr (SLAVC) end to end: the official layout built from the real lists, maps
scored through `avloc evaluate`, compared with SLAVC's evaluator transcribed here (torch's bicubic upsampling,
the fixed-scale confidence, both thresholding modes, `bbox2gtmap`, `EvaluatorFull.finalize_stats`)."""

import csv
import json
import os

import cv2
import numpy as np
import pytest
import soundfile
from shared_data import SHARED, shared_path
from slavc_reference import reference_table_entry

from keras_avloc.cli import main
from keras_avloc.data import AnnotationError, extended_records

REAL = SHARED / "annotations"
SUBSETS = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, 144**2), "huge": (144**2, 10000**2)}


def official_layout(tmp_path, pairs=14):
    """ROOT/frames, ROOT/audio and ROOT/metadata for the first `pairs` non-sounding rows of the real Extended
    VGG-SS list whose frame and audio are test clips, plus one row pairing an extra clip with its own audio."""
    shared_path("annotations")
    boxes = {entry["file"]: entry for entry in json.loads((REAL / "vggss.json").read_text())}
    with open(REAL / "extended_vggss" / "vggss_test_plus_silent.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] == "non-sounding"]
    chosen = [row for row in rows if row["video"] in boxes and row["audio"] in boxes][:pairs]
    chosen.append(next(row for row in rows if row["video"] == row["audio"]))
    positives = sorted({row[key] for row in chosen[:-1] for key in ("video", "audio")})
    root = tmp_path / "vggss"
    for folder in ("frames", "audio", "metadata"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(3)
    for clip in positives + [chosen[-1]["video"]]:
        cv2.imwrite(str(root / "frames" / f"{clip}.jpg"), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        soundfile.write(str(root / "audio" / f"{clip}.wav"), rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
    (root / "metadata" / "vggss_test.csv").write_text("\r\n".join(positives))
    (root / "metadata" / "vggss.json").write_text(json.dumps([boxes[clip] for clip in positives]))
    lines = ["video,audio,label"] + [f"{row['video']},{row['audio']},non-sounding" for row in chosen]
    (root / "metadata" / "vggss_test_plus_silent.csv").write_text("\r\n".join(lines))
    return root, positives, chosen, boxes


def official_scores(maps):
    """SLAVC test.py: bicubic (align_corners=True) to 224 x 224 with torch, as the official script calls it."""
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        up = torch.nn.functional.interpolate(torch.from_numpy(maps[:, None]), size=(224, 224), mode="bicubic",
                                             align_corners=True)
    return up[:, 0].numpy()


def official_gt(entry):
    gt = np.zeros((224, 224))
    for box in entry["bbox"] if entry else []:
        xmin, ymin, xmax, ymax = (np.clip(np.array(box), 0, 1) * 224).astype(int)
        temp = np.zeros((224, 224))
        temp[ymin:ymax, xmin:xmax] = 1
        gt += temp
    gt[gt > 0] = 1
    return gt


def official_sample(score, gt, relative):
    """(cIoU, confidence, area) of one sample as `EvaluatorFull.update` computes them."""
    flat = np.sort(score.flatten())
    confidence = flat[-(score.size // 4):].mean()
    if relative:
        pred = score if score.max() == score.min() else (score - score.min()) / (score.max() - score.min())
        thr = np.sort(pred.flatten())[int(score.size * 0.5)]
    else:
        pred, thr = score, 0.5
    infer = (pred >= thr).astype(float)
    denominator = gt.sum() + (infer * (gt == 0)).sum()
    ciou = (infer * gt).sum() / denominator if denominator else 0.0
    return ciou, confidence, gt.sum()


def official_flickr_gt(pixel_boxes):
    """SLAVC `load_all_bboxes` + `bbox2gtmap` for Flickr: int(224 * v / 256), consensus of the annotators."""
    gt = np.zeros((224, 224))
    for box in pixel_boxes:
        xmin, ymin, xmax, ymax = (int(224 * int(v) / 256) for v in box)
        temp = np.zeros((224, 224))
        temp[ymin:ymax, xmin:xmax] = 1
        gt += temp
    gt = gt / 2
    gt[gt > 1] = 1
    return gt


def official_table(names, maps, boxes, relative, gt_of=official_gt):
    scores = official_scores(maps)
    samples = []
    for name, score in zip(names, scores):
        entry = None if "__" in name else boxes[name]
        gt = official_gt(None) if entry is None else gt_of(entry)
        samples.append(official_sample(score, gt, relative) + (entry is not None,))
    cious, confidences, areas, has_object = (list(column) for column in zip(*samples))
    table = {}
    for ciou_thr, tag in ((0.5, 50), (0.75, 75)):
        for subset in ("all", "visible", *SUBSETS):
            if subset == "all":
                keep = [True] * len(names)
            elif subset == "visible":
                keep = has_object
            else:
                low, high = SUBSETS[subset]
                keep = [o and low <= a < high for o, a in zip(has_object, areas)]
            values = reference_table_entry(has_object, cious, confidences, keep, ciou_thr)
            for metric, value in zip(("Precision", "AP", "F1", "AUC"), values):
                table[f"{metric}-{subset}@{tag}"] = value
    return table


def test_extended_records_pair_frames_with_other_clips_audio_and_name_missing_media(tmp_path):
    root, positives, chosen, _ = official_layout(tmp_path)
    records, missing = extended_records(str(root), "vggss", str(root / "metadata"))
    assert missing == {}
    assert [r["file"] for r in records[: len(positives)]] == positives
    negatives = records[len(positives):]
    assert len(negatives) == len(chosen) and {r["kind"] for r in negatives} == {"offscreen"}
    first = chosen[0]
    assert negatives[0]["file"] == f"{first['video']}__{first['audio']}"
    assert negatives[0]["image"].endswith(os.path.join("frames", f"{first['video']}.jpg"))
    assert negatives[0]["audio"].endswith(os.path.join("audio", f"{first['audio']}.wav"))
    assert negatives[-1]["audio"].endswith(f"{chosen[-1]['video']}.wav")  # the extra clip with its own audio
    # the clip's audio goes missing: its positive and every pair that hears it are named, not dropped silently
    gone = first["audio"]
    os.remove(root / "audio" / f"{gone}.wav")
    records, missing = extended_records(str(root), "vggss", str(root / "metadata"))
    assert gone in missing and f"{first['video']}__{gone}" in missing
    assert all(gone not in (r["file"], r.get("audio_id")) for r in records)
    with pytest.raises(AnnotationError, match="vggss_test.csv: not found.*--metadata"):
        extended_records(str(root), "vggss", str(tmp_path / "nowhere"))
    with pytest.raises(AnnotationError, match="--gt-dir"):
        (root / "metadata" / "flickr_test.csv").write_text("1,0")
        (root / "metadata" / "flickr_test_plus_silent.csv").write_text("video,audio,label")
        extended_records(str(root), "flickr", str(root / "metadata"))


@pytest.mark.parametrize("threshold", ["median", "0.5"])
def test_extended_vggss_equals_the_official_evaluator(tmp_path, threshold):
    root, positives, chosen, boxes = official_layout(tmp_path)
    names = positives + [f"{row['video']}__{row['audio']}" for row in chosen]
    rng = np.random.default_rng(11)
    # maps on SLAVC's fixed scale ((cosine + 1) / 2); the non-sounding pairs are quieter on average
    maps = rng.uniform(0.2, 0.9, (len(names), 7, 7)).astype(np.float32)
    maps[len(positives):] -= 0.15
    gone = chosen[0]["audio"]
    os.remove(root / "audio" / f"{gone}.wav")
    np.savez(tmp_path / "maps.npz", files=np.array(names), heatmaps=maps)
    out = tmp_path / "out"
    assert main(["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--protocol",
                 "extended-vggss", "--metadata", str(root / "metadata"), "--pred-threshold", threshold,
                 "--out", str(out), "--no-progress", "--baselines"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped"]["listed_without_media"] == 2  # the clip itself and the pair that hears it
    assert metrics["source"]["settings"]["threshold"] == ("median" if threshold == "median" else 0.5)
    kept = [i for i, name in enumerate(names) if gone not in name]
    expected = official_table([names[i] for i in kept], maps[kept], boxes, relative=threshold == "median")
    table = metrics["model"]["extended_table"]
    assert metrics["model"]["num_samples"] == len(kept)
    for key, value in expected.items():
        if value is None:
            assert table[key] is None, key
        else:
            assert table[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    assert table["LocAcc"] == table["Precision-visible@50"]
    assert set(metrics["baselines"]) == {"center", "random"}
    assert metrics["baselines"]["center"]["extended_table"]["AP-all@50"] is not None


def test_extended_cli_errors_name_the_fix(tmp_path, capsys):
    root, *_ = official_layout(tmp_path, pairs=2)
    np.savez(tmp_path / "maps.npz", files=np.array(["x"]), heatmaps=np.zeros((1, 7, 7), np.float32))
    common = ["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--no-progress"]
    (tmp_path / "empty").mkdir()
    assert main(common + ["--protocol", "extended-vggss", "--metadata", str(tmp_path / "empty"),
                          "--out", str(tmp_path / "a")]) != 0
    assert "vggss_test.csv: not found" in capsys.readouterr().err
    assert main(common + ["--protocol", "extended-vggss", "--out", str(tmp_path / "a")]) != 0
    assert "none of the 1 heatmap files" in capsys.readouterr().err
    assert main(common + ["--protocol", "vggss", "--pred-threshold", "0.5", "--out", str(tmp_path / "b")]) != 0
    assert "--pred-threshold and --saliency-alpha apply to the extended protocols" in capsys.readouterr().err
    assert main(common + ["--protocol", "extended-vggss", "--pred-threshold", "high", "--out", str(tmp_path / "c")]) == 2
    assert "must be 'median' or a number" in capsys.readouterr().err


def test_extended_protocol_runs_a_checkpoint_that_hears_the_paired_audio(tmp_path):
    from keras_avloc.models import EZVSL

    root, positives, chosen, _ = official_layout(tmp_path, pairs=3)
    model = EZVSL(embed_dim=16, backbone_kwargs={"width": 8})
    model({"image": np.zeros((1, 64, 64, 3), np.float32), "audio": np.zeros((1, 257, 100, 1), np.float32)})
    model.save(tmp_path / "ezvsl.keras")
    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "ezvsl.keras"), "--data", str(root), "--protocol",
                 "extended-vggss", "--image-size", "64", "--clip-seconds", "0.5", "--out", str(out),
                 "--no-progress", "--baselines"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["num_samples"] == len(positives) + len(chosen)
    assert metrics["model"]["num_evaluated"] == len(positives)
    assert set(metrics["baselines"]) == {"center", "random", "objectness"}
    confidence = {row["name"]: row["confidence"] for row in json.loads((out / "per_sample.json").read_text())}
    first = chosen[0]
    # the same frame with another clip's audio gives another map
    assert confidence[f"{first['video']}__{first['audio']}"] != pytest.approx(confidence[first["video"]], rel=1e-6)


def test_extended_flickr_reads_the_annotator_boxes_and_equals_the_official_evaluator(tmp_path):
    shared_path("annotations")
    with open(REAL / "extended_flickr" / "flickr_test_plus_silent.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] == "non-sounding"][:10]
    clips = sorted({row[key] for row in rows for key in ("video", "audio")})
    root = tmp_path / "flickr"
    for folder in ("frames", "audio", "metadata", "Annotations"):
        (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(5)
    pixel_boxes = {}
    for clip in clips:
        cv2.imwrite(str(root / "frames" / f"{clip}.jpg"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
        soundfile.write(str(root / "audio" / f"{clip}.wav"), rng.normal(0, 0.1, 4000).astype(np.float32), 16000)
        # one to three annotators, boxes in the 256-pixel frame, written as the Flickr-SoundNet XMLs are
        corners = [sorted(rng.integers(0, 256, 2)) + sorted(rng.integers(0, 256, 2)) for _ in range(rng.integers(1, 4))]
        pixel_boxes[clip] = [(x1, y1, x2, y2) for x1, x2, y1, y2 in corners]
        objects = "".join(f"<object><bbox><label>s</label><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                          f"<ymax>{y2}</ymax></bbox></object>" for x1, y1, x2, y2 in pixel_boxes[clip])
        (root / "Annotations" / f"{clip}.xml").write_text(f"<annotation>{objects}</annotation>")
    (root / "metadata" / "flickr_test.csv").write_text("\r\n".join(f"{clip},0" for clip in clips))
    lines = ["video,audio,label"] + [f"{row['video']},{row['audio']},non-sounding" for row in rows]
    (root / "metadata" / "flickr_test_plus_silent.csv").write_text("\r\n".join(lines))
    names = clips + [f"{row['video']}__{row['audio']}" for row in rows]
    maps = rng.uniform(0.0, 1.0, (len(names), 7, 7)).astype(np.float32)
    np.savez(tmp_path / "maps.npz", files=np.array(names), heatmaps=maps)
    out = tmp_path / "out"
    assert main(["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--protocol",
                 "extended-flickr", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ground_truth"] == "consensus"
    expected = official_table(names, maps, pixel_boxes, relative=True, gt_of=official_flickr_gt)
    for key, value in expected.items():
        assert metrics["model"]["extended_table"][key] == (None if value is None else pytest.approx(value, abs=1e-6)), key


def test_data_pairs_extends_any_split_with_cross_class_pairs(tmp_path, capsys):
    from tiny_av_data import write_colour_tone_split

    from keras_avloc.data import load_split

    root = tmp_path / "mine"
    write_colour_tone_split(str(root), classes=("red", "blue", "green"), count=9, size=32, seconds=0.5, split="test",
                            masks=True)
    assert main(["data", "pairs", str(root), "--split", "test"]) == 0
    assert "9 records of test + 9 non-sounding pairs" in capsys.readouterr().out
    records = load_split(str(root), "test_pairs")
    by_file = {r["file"]: r for r in records}
    pairs = [r for r in records if r["kind"] == "offscreen"]
    assert len(records) == 18 and len(pairs) == 9
    for pair in pairs:
        frame, heard = pair["frame_id"], pair["audio_id"]
        assert pair["file"] == f"{frame}__{heard}" and by_file[frame]["class"] != by_file[heard]["class"]
        assert pair["image"] == by_file[frame]["image"] and pair["audio"] == by_file[heard]["audio"]
        assert not len(pair["boxes"]) and pair["mask"] is None
    assert records[0]["mask"] == str(root / "masks" / "clip_00.png")  # masks stay relative to ROOT in the file
    assert main(["data", "pairs", str(root), "--split", "test"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    assert main(["data", "pairs", str(root), "--split", "test", "--seed", "1", "--overwrite"]) == 0
    # scored as an extended protocol: the table is printed beside the usual one
    names = [r["file"] for r in load_split(str(root), "test_pairs")]
    maps = np.random.default_rng(0).random((len(names), 7, 7)).astype(np.float32)
    np.savez(tmp_path / "maps.npz", files=np.array(names), heatmaps=maps)
    capsys.readouterr()
    assert main(["evaluate", "--heatmaps", str(tmp_path / "maps.npz"), "--data", str(root), "--split", "test_pairs",
                 "--protocol", "stamps", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Extended protocol (SLAVC)" in printed and "9 positives, 9 non-sounding pairs" in printed


def test_saliency_fusion_follows_slavc_on_fixed_scales(tmp_path):
    """alpha = 1 leaves (cos + 1) / 2, so every confidence is (plain confidence + 1) / 2; alpha = 0 leaves the
    objectness alone, so a frame's confidence no longer depends on what it hears."""
    from keras_avloc.metrics.extended import saliency_fusion
    from keras_avloc.models import EZVSL

    cosine = np.array([[[-1.0, 0.5]]], np.float32)
    objectness = np.array([[[2.5, 0.0]]], np.float32)
    np.testing.assert_allclose(saliency_fusion(cosine, objectness, 0.9), [[[0.1, 0.675]]], atol=1e-7)
    root, positives, chosen, _ = official_layout(tmp_path, pairs=3)
    model = EZVSL(embed_dim=16, backbone_kwargs={"width": 8})
    model({"image": np.zeros((1, 64, 64, 3), np.float32), "audio": np.zeros((1, 257, 100, 1), np.float32)})
    model.save(tmp_path / "ezvsl.keras")
    confidences = {}
    for alpha in (None, "1", "0"):
        out = tmp_path / f"out_{alpha}"
        extra = [] if alpha is None else ["--saliency-alpha", alpha]
        assert main(["evaluate", "--checkpoint", str(tmp_path / "ezvsl.keras"), "--data", str(root), "--protocol",
                     "extended-vggss", "--image-size", "64", "--clip-seconds", "0.5", "--out", str(out),
                     "--no-progress", *extra]) == 0
        rows = json.loads((out / "per_sample.json").read_text())
        confidences[alpha] = {row["name"]: row["confidence"] for row in rows}
    for name, plain in confidences[None].items():
        assert confidences["1"][name] == pytest.approx((plain + 1) / 2, abs=1e-5)
    first = chosen[0]
    pair = f"{first['video']}__{first['audio']}"
    assert confidences["0"][pair] == pytest.approx(confidences["0"][first["video"]], abs=1e-6)
    assert confidences[None][pair] != pytest.approx(confidences[None][first["video"]], abs=1e-6)
