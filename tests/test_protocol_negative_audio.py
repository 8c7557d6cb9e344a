"""Negative audio (xavijuanola/vssl_eval): the metrics against the published formulas transcribed here, the passes
(each frame with its own audio, another class's clip, silence and noise), the log quirk, and the CLI."""

import json

import numpy as np
import pytest
from tiny_av_data import TONES, write_colour_tone_split

from keras_avloc.cli import main
from keras_avloc.data import load_split
from keras_avloc.metrics.negative import NEGATIVE_KINDS, NegativeAudioEvaluator

GRID = [0.05 * i for i in range(21)]


def trapezoid(ys):
    return sum((GRID[i + 1] - GRID[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(20))


def official_rows(positives, negatives, gts, threshold):
    """`metrics_eval` / `compute_metrics` for one threshold, as published: strict binarisation, cIoU with NaN -> 0,
    pIA = share of pixels above, AOC = area of the `<=` curve of pIA, IoU of binary maps (empty/empty = 1,
    one empty = 0), F = 2ab / (a + b)."""
    iou, pia, pair = [], {k: [] for k in NEGATIVE_KINDS}, {k: [] for k in NEGATIVE_KINDS}
    for index, (pos, gt) in enumerate(zip(positives, gts)):
        b = (pos > threshold).astype(int)
        denominator = gt.sum() + (b * (gt == 0)).sum()
        iou.append(0.0 if denominator == 0 else (b * gt).sum() / denominator)
        for kind in NEGATIVE_KINDS:
            n = (negatives[kind][index] > threshold).astype(int)
            pia[kind].append(n.sum() / n.size)
            if n.sum() == 0 and b.sum() > 0:
                pair[kind].append(0.0)
            elif b.sum() == 0 and n.sum() == 0:
                pair[kind].append(1.0)
            else:
                pair[kind].append(np.logical_and(b, n).sum() / np.logical_or(b, n).sum())
    row = {"mean_iou": np.mean(iou), "auc": trapezoid([sum(v >= t for v in iou) / len(iou) for t in GRID])}
    for kind in NEGATIVE_KINDS:
        row[f"pia_{kind}"] = np.mean(pia[kind])
        row[f"aoc_{kind}"] = trapezoid([sum(v <= t for v in pia[kind]) / len(pia[kind]) for t in GRID])
        row[f"iou_pos_{kind}"] = np.mean(pair[kind])
        a, c = row["mean_iou"], 1 - row[f"pia_{kind}"]
        row[f"f_pos_{kind}"] = 2 * a * c / (a + c)
    neg = np.mean([1 - row[f"pia_{k}"] for k in NEGATIVE_KINDS])
    row["f_pos_neg"] = 2 * row["mean_iou"] * neg / (row["mean_iou"] + neg)
    aoc = np.mean([row[f"aoc_{k}"] for k in NEGATIVE_KINDS])
    row["f_auc_aoc_neg"] = 2 * row["auc"] * aoc / (row["auc"] + aoc)
    return row


def test_negative_audio_metrics_equal_the_published_formulas():
    rng = np.random.default_rng(3)
    count = 40
    gts = np.zeros((count, 32, 32))
    for index in range(count):
        x, y = rng.integers(0, 20, 2)
        gts[index, y:y + 12, x:x + 10] = 1
    positives = rng.random((count, 32, 32)).astype(np.float32) + 0.6 * gts
    negatives = {kind: rng.random((count, 32, 32)).astype(np.float32) * scale
                 for kind, scale in zip(NEGATIVE_KINDS, (0.2, 1.0, 1.3))}
    negatives["silence"][:5] = 0.0  # empty negatives: the pair IoU's degenerate rules
    positives[5:7] = 0.0  # empty positives
    thresholds = [0.5, 0.9, 1.2]
    evaluator = NegativeAudioEvaluator(thresholds)
    for start in range(0, count, 16):
        part = slice(start, start + 16)
        evaluator.update(positives[part], {k: v[part] for k, v in negatives.items()}, gts[part])
    for row, threshold in zip(evaluator.result(), thresholds):
        expected = official_rows(positives, negatives, gts, threshold)
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, abs=1e-12), (threshold, key)
        assert row["num_samples"] == count and row["threshold"] == threshold
    with pytest.raises(ValueError, match="thresholds must be finite"):
        NegativeAudioEvaluator([np.nan])


class ListeningStub:
    """A model whose map is 1 where its frame's colour matches the tone it hears, and that logs what it heard."""

    frontend = "lvs"
    name = "stub"

    def __init__(self):
        self.heard = []

    @staticmethod
    def _colour(images):
        return np.argmax(images.reshape(len(images), -1, 3).max(axis=1), axis=1)  # 0 red, 1 green, 2 blue

    @staticmethod
    def _tone(audio):
        profile = np.asarray(audio)[..., 0].mean(axis=2)
        peak = profile.argmax(axis=1)
        bins = {0: TONES["red"], 1: TONES["green"], 2: TONES["blue"]}
        out = []
        for row, index in zip(profile, peak):
            if row.max() - row.min() < 1e-3:
                out.append("flat")
                continue
            if row.max() - np.median(row) < 0.3:  # white noise: no bin stands out
                out.append("noise")
                continue
            match = [c for c, hz in bins.items() if abs(index - hz / 31.25) <= 2]
            out.append(match[0] if match else "other")
        return out

    def localize(self, images, audio, image_size):
        images = np.asarray(images)
        colours, tones = self._colour(images), self._tone(audio)
        self.heard.extend(zip(colours.tolist(), tones))
        maps = np.zeros((len(images),) + tuple(image_size), np.float32)
        for row, (colour, tone) in enumerate(zip(colours, tones)):
            maps[row] = 1.0 if colour == tone else float(np.asarray(audio)[row].mean())
        return maps


def test_passes_pair_each_frame_with_its_own_audio_another_class_silence_and_noise(tmp_path):
    from keras_avloc.evaluation.negative_audio import OFFICIAL_SEEDS, evaluate_negative_audio

    root = tmp_path / "tones"
    write_colour_tone_split(str(root), classes=("red", "green", "blue"), count=9, size=48, seconds=0.5, split="test")
    records = load_split(str(root), "test")
    stub = ListeningStub()
    metrics = evaluate_negative_audio(stub, str(root), records, threshold=0.5, seeds=OFFICIAL_SEEDS[:2], batch_size=4,
                                      progress=False, clip_seconds=0.5, image_size=48)
    row = metrics["model"]
    assert row["num_samples"] == 18  # 9 frames x 2 passes
    heard = stub.heard
    matched = sum(1 for colour, tone in heard if colour == tone)
    assert matched == 18  # each frame with its own tone once per pass, never with another frame's of its class
    assert sum(1 for _, tone in heard if tone in (0, 1, 2)) == 36  # own + off-screen: always a clean tone
    assert sum(1 for _, tone in heard if tone == "flat") == 18  # silence: a constant spectrogram
    assert sum(1 for _, tone in heard if tone == "noise") == 18
    # the map is 1 only with the own tone: the positives light up everything, the negatives (values < 0) nothing
    assert row["pia_offscreen"] == 0.0 and row["pia_silence"] == 0.0 and row["pia_noise"] == 0.0
    assert row["iou_pos_offscreen"] == 0.0 and row["max_positive"] == 1.0
    # silence is log(1e-7) / 12 everywhere; vssl_eval's log-free silence is 0 (the quirk, opt-in)
    assert row["max_silence"] == pytest.approx(np.log(1e-7) / 12, abs=1e-4)
    quirk = evaluate_negative_audio(ListeningStub(), str(root), records, threshold=0.5, seeds=OFFICIAL_SEEDS[:1],
                                    progress=False, clip_seconds=0.5, image_size=48, official_log_quirk=True)
    assert quirk["model"]["max_silence"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < quirk["model"]["max_noise"] < 1e-3  # the noise PSD / 12, about 1e-5, instead of its log


def test_negative_audio_cli_chooses_the_threshold_on_val(tmp_path, capsys):
    from keras_avloc.models import EZVSL

    root = tmp_path / "tones"
    for split, seed in (("val", 1), ("test", 2)):
        write_colour_tone_split(str(root), classes=("red", "blue"), count=6, size=48, seconds=0.5, split=split,
                                seed=seed, prefix=split)
    model = EZVSL(embed_dim=16, backbone_kwargs={"width": 8})
    model({"image": np.zeros((1, 64, 64, 3), np.float32), "audio": np.zeros((1, 257, 100, 1), np.float32)})
    model.save(tmp_path / "ezvsl.keras")
    common = ["evaluate", "--checkpoint", str(tmp_path / "ezvsl.keras"), "--data", str(root), "--protocol",
              "negative-audio", "--image-size", "64", "--clip-seconds", "0.5", "--passes", "2", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| objectness |" in printed and "12 scored samples (2 passes)" in printed
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["chosen_on"].startswith("chosen on val") and metrics["seeds"] == [1234, 2345]
    assert set(metrics["baselines"]) == {"center", "objectness"}
    assert main(common + ["--universal-threshold", "0.1", "--out", str(tmp_path / "given")]) == 0
    given = json.loads((tmp_path / "given" / "metrics.json").read_text())
    assert given["model"]["threshold"] == 0.1 and given["baselines"] == {}
    assert main(common + ["--universal-threshold", "median", "--out", str(tmp_path / "bad")]) != 0
    assert "takes a number" in capsys.readouterr().err
