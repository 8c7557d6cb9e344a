"""What keeps a map honest outside its generator: level normalisation before the front-end (maps that do not move
with loudness, for every method), the listening control (another class's audio), and the stamps builder's wide
distribution and second recipe."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_avloc.data.audio import FRONTEND_SAMPLE_RATES, get_frontend, normalize_level, with_level
from keras_avloc.evaluation.report import listening_summary, swapped_audio_records
from keras_avloc.models import build_model, get_method_class, method_names
from tiny_configs import TINY_OPTIONS


def numpy_gated_normalise(waves, level_db, frame=800, gate_db=20.0, floor_db=-100.0):
    """Independent reference: per clip, cut 50 ms frames (the last one zero-padded), keep the frames whose mean
    power is within `gate_db` of the loudest, and scale so that the mean power of those frames is 10^(L/10)."""
    out = []
    for clip in np.asarray(waves, np.float64):
        channels = clip.reshape(-1, clip.shape[-1])
        count = -(-channels.shape[1] // frame)
        padded = np.zeros((channels.shape[0], count * frame))
        padded[:, :channels.shape[1]] = channels
        power = (padded.reshape(channels.shape[0], count, frame) ** 2).mean(axis=2).mean(axis=0)
        kept = power[power >= power.max() * 10 ** (-gate_db / 10)]
        rms = np.sqrt(kept.mean())
        out.append(clip * 10 ** (level_db / 20) / max(rms, 10 ** (floor_db / 20)))
    return np.stack(out)


def test_normalize_level_matches_the_gated_rms_formula_and_keeps_silence_and_channel_balance():
    rng = np.random.default_rng(0)
    short_event = np.zeros(16000)
    short_event[4000:5600] = 0.3 * rng.normal(size=1600)  # one 100 ms event in a second of silence
    waves = np.stack([0.3 * rng.normal(size=16000), 0.001 * rng.normal(size=16000), np.zeros(16000),
                      short_event]).astype(np.float32)
    got = np.asarray(normalize_level(waves, -20.0))
    np.testing.assert_allclose(got, numpy_gated_normalise(waves, -20.0), rtol=1e-5, atol=1e-7)
    assert np.sqrt(np.mean(got[0].astype(np.float64) ** 2)) == pytest.approx(0.1, rel=0.02)
    assert not got[2].any()
    # The event, not the silence around it, is brought to the level.
    assert np.sqrt(np.mean(got[3, 4000:5600].astype(np.float64) ** 2)) == pytest.approx(0.1, rel=0.02)
    # Multichannel: one gain for all channels of a clip (the balance between them carries direction).
    quad = np.stack([waves[:2], 0.5 * waves[:2]], axis=1)  # [2, 2 channels, T]
    levelled = np.asarray(normalize_level(quad, -10.0))
    np.testing.assert_allclose(levelled, numpy_gated_normalise(quad, -10.0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(levelled[:, 1], 0.5 * levelled[:, 0], rtol=1e-5, atol=1e-7)
    assert with_level("lvs", None) is get_frontend("lvs")


FRAME_METHODS = [m for m in method_names() if get_method_class(m).data_kind == "frames"]


@pytest.mark.parametrize("method", FRAME_METHODS)
def test_a_clip_20_db_louder_or_quieter_leaves_every_methods_map_unchanged(method):
    model_class = get_method_class(method)
    rate = FRONTEND_SAMPLE_RATES[model_class.frontend]
    rng = np.random.default_rng(1)
    t = np.arange(int(0.5 * rate)) / rate
    wave = (0.05 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.normal(size=t.shape)).astype(np.float32)
    waves = np.stack([wave * 10 ** (gain / 20) for gain in (-20.0, 0.0, 20.0)])
    images = np.repeat(rng.normal(size=(1, 64, 64, 3)).astype(np.float32), 3, axis=0)
    tf.keras.utils.set_random_seed(0)
    model = build_model(method, **(TINY_OPTIONS[method] or {}))

    def maps(frontend):
        audio = np.asarray(frontend(tf.constant(waves)))
        heat = np.asarray(model.localize(images, audio), np.float64)
        low, high = heat.min(axis=(1, 2), keepdims=True), heat.max(axis=(1, 2), keepdims=True)
        return (heat - low) / np.maximum(high - low, 1e-12)

    levelled = maps(with_level(model_class.frontend, -20.0))
    assert np.abs(levelled - levelled[1:2]).max() < 2e-3
    # Without it the map moves with the level: the test can tell the difference.
    raw = maps(get_frontend(model_class.frontend))
    assert np.abs(raw - raw[1:2]).max() > 10 * max(np.abs(levelled - levelled[1:2]).max(), 1e-4)


def test_make_dataset_and_a_trained_model_apply_the_recorded_level(tmp_path):
    from keras_avloc.data import make_dataset
    from keras_avloc.training import train
    from tiny_av_data import write_colour_tone_split

    write_colour_tone_split(str(tmp_path / "data"), count=4, size=48, seconds=0.5)
    plain = make_dataset(str(tmp_path / "data"), "train", clip_seconds=0.5, batch_size=4, image_size=32)
    levelled = make_dataset(str(tmp_path / "data"), "train", clip_seconds=0.5, batch_size=4, image_size=32,
                            audio_level_db=-30.0)
    (x_plain, _), (x_level, _) = next(iter(plain)), next(iter(levelled))
    assert not np.allclose(np.asarray(x_plain["audio"]), np.asarray(x_level["audio"]), atol=1e-3)
    model, _ = train("lvs", str(tmp_path / "data"), str(tmp_path / "run"), epochs=1, batch_size=4, image_size=32,
                     clip_seconds=0.5, seed=0, verbose=0, run_eagerly=True, audio_level_db=-30.0,
                     model_kwargs=TINY_OPTIONS["lvs"])
    assert model.eval_settings["audio_level_db"] == -30.0
    from keras_avloc.models import load_model

    assert load_model(str(tmp_path / "run" / "model.keras")).eval_settings["audio_level_db"] == -30.0
    # `avloc evaluate` applies the recorded level and runs the listening control beside the baselines.
    from keras_avloc.cli import main

    assert main(["evaluate", "--checkpoint", str(tmp_path / "run" / "model.keras"), "--data", str(tmp_path / "data"),
                 "--split", "train", "--protocol", "vggss", "--baselines", "--listening", "--no-progress",
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["source"]["settings"]["audio_level_db"] == -30.0
    heard = metrics["listening"]
    assert heard["own_auc"] == pytest.approx(metrics["model"]["auc"]) and "margin_lost" in heard
    assert "another class's audio" in metrics["table"]


def test_swapped_audio_comes_from_another_class_and_repeats_for_a_seed():
    records = [{"file": f"c{i}", "class": "abc"[i % 3], "audio": f"/a/c{i}.wav"} for i in range(12)]
    swapped = swapped_audio_records(records, seed=4)
    by_audio = {record["audio"]: record["class"] for record in records}
    assert all(by_audio[new["audio"]] != old["class"] for old, new in zip(records, swapped))
    assert [r["file"] for r in swapped] == [r["file"] for r in records]  # frames and ground truth stay
    assert swapped == swapped_audio_records(records, seed=4)
    assert swapped != swapped_audio_records(records, seed=5)
    lonely = [{"file": "x", "class": "a", "audio": "/a/x.wav"}]
    assert swapped_audio_records(lonely)[0]["audio"] == "/a/x.wav"


def test_listening_summary_is_the_share_of_the_margin_over_the_random_map():
    summary = listening_summary({"auc": 0.36}, {"auc": 0.26, "pointing_game": 0.5}, {"auc": 0.16})
    assert summary["margin_lost"] == pytest.approx(0.5)
    assert summary["auc_drop"] == pytest.approx(0.10)
    assert listening_summary({"auc": 0.15}, {"auc": 0.1}, {"auc": 0.16})["margin_lost"] is None
    assert "margin_lost" not in listening_summary({"auc": 0.3}, {"auc": 0.2})


def test_the_wide_distribution_and_the_second_recipe(tmp_path):
    from keras_avloc.data import stamps_variety
    from keras_avloc.data.stamps import build_stamps

    out = str(tmp_path / "wide")
    summary = build_stamps(out, n_train=16, n_val=0, n_test=0, n_test_mix=0, n_test_ext=0, size=96,
                           classes=("cow", "dog", "owl", "pig"), variety="wide", n_test_ood=6, progress=False)
    assert summary["variety"] == "wide"
    train_records = json.load(open(os.path.join(out, "train.json")))
    levels = [r["scene"]["level_dbfs"] for r in train_records]
    assert all(-45.5 <= level <= -4.5 for level in levels) and max(levels) - min(levels) > 8
    assert {r["scene"]["background_kind"] for r in train_records} >= {"photo", "texture"}
    unseen = set(summary["unseen_recordings"])
    ood = json.load(open(os.path.join(out, "test_ood.json")))
    assert all(r["scene"]["audio"][0]["recording"] in unseen for r in ood)
    roots = {os.path.basename(folder) for folder in stamps_variety.OOD_BACKGROUND_DIRS}
    assert all(r["scene"]["background_kind"] == "ood" for r in ood)
    assert all(-26.5 <= r["scene"]["level_dbfs"] <= -19.5 for r in ood)
    assert roots  # the second recipe's backgrounds come from other packages than the training photos
    # Byte-identical rebuild for the seed.
    again = str(tmp_path / "again")
    build_stamps(again, n_train=16, n_val=0, n_test=0, n_test_mix=0, n_test_ext=0, size=96,
                 classes=("cow", "dog", "owl", "pig"), variety="wide", n_test_ood=6, progress=False)
    for name in ("train_00003", "test_ood_00002"):
        for folder, ext in (("frames", ".jpg"), ("audio", ".wav")):
            with open(os.path.join(out, folder, name + ext), "rb") as a, open(os.path.join(again, folder, name + ext),
                                                                               "rb") as b:
                assert a.read() == b.read()
