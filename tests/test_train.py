"""`avloc train` / `keras_avloc.training.train`: fit on a tiny dataset, kill -9 and resume."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from tiny_av_data import write_colour_tone_split


def write_tiny_dataset(root, count=8, size=64, seconds=1.0, split="train"):
    """frames/*.jpg (a coloured square on grey noise), audio/*.wav (the colour's tone), <split>.json."""
    return write_colour_tone_split(root, ("red", "blue"), count, size, seconds, split, seed=0, prefix="clip")


def _train_command(data, out, epochs, method="lvs"):
    return [
        sys.executable, "-m", "keras_avloc", "train", "--method", method, "--data", str(data), "--out", str(out),
        "--epochs", str(epochs), "--batch-size", "4", "--image-size", "64", "--clip-seconds", "0.5",
        "--width", "8", "--seed", "1", "--quiet", "--eager",
    ]


def _csv_epochs(path):
    with open(path) as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_train_api_writes_outputs_and_finishes_idempotently(tmp_path):
    from keras_avloc.models import EZVSL, load_model
    from keras_avloc.training import train

    data = tmp_path / "data"
    write_tiny_dataset(str(data), count=4)
    write_tiny_dataset(str(data), count=4, split="val")
    out = tmp_path / "run"
    model, history = train("ezvsl", str(data), str(out), epochs=2, batch_size=4, val_split="val", image_size=64,
                           clip_seconds=0.5, model_kwargs={"embed_dim": 16, "backbone_kwargs": {"width": 8}},
                           seed=0, verbose=0, run_eagerly=True)
    assert isinstance(model, EZVSL)
    assert len(history.history["loss"]) == 2 and "val_loss" in history.history
    assert all(np.isfinite(history.history["loss"]))
    assert (out / "model.keras").is_file() and not (out / "backup").exists()
    assert _csv_epochs(out / "training_log.csv") == [0, 1]
    assert sorted(os.listdir(out / "heatmaps")) == ["epoch_001.png", "epoch_002.png"]
    state = json.loads((out / "train_state.json").read_text())
    assert state["completed_epochs"] == 2 and state["settings"]["method"] == "ezvsl"
    restored = load_model(str(out / "model.keras"))
    images = np.zeros((2, 64, 64, 3), np.float32)
    audio = np.zeros((2, 257, 32, 1), np.float32)
    np.testing.assert_allclose(restored.localize(images, audio), model.localize(images, audio), atol=1e-5)
    # re-running a finished training does nothing
    same = dict(batch_size=4, val_split="val", image_size=64, clip_seconds=0.5, seed=0,
                model_kwargs={"embed_dim": 16, "backbone_kwargs": {"width": 8}})
    again, no_history = train("ezvsl", str(data), str(out), epochs=2, **same)
    assert no_history is None and isinstance(again, EZVSL)
    # raising --epochs continues from the saved model (epoch 3 only), not from scratch
    more, more_history = train("ezvsl", str(data), str(out), epochs=3, verbose=0, run_eagerly=True, **same)
    assert len(more_history.history["loss"]) == 1
    assert _csv_epochs(out / "training_log.csv") == [0, 1, 2]
    assert json.loads((out / "train_state.json").read_text())["completed_epochs"] == 3


@pytest.mark.long
def test_cli_train_resumes_after_kill_9(tmp_path):
    data = tmp_path / "data"
    write_tiny_dataset(str(data), count=4)  # one batch of 4 per epoch
    out = tmp_path / "run"
    epochs = 3
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(_train_command(data, out, epochs), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    state_path = out / "train_state.json"
    deadline = time.time() + 240
    completed = 0
    while time.time() < deadline and process.poll() is None:
        if state_path.exists():
            completed = json.loads(state_path.read_text()).get("completed_epochs", 0)
            if completed >= 1:
                break
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()[-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    killed_at = json.loads(state_path.read_text())["completed_epochs"]
    assert 1 <= killed_at < epochs
    assert (out / "backup").is_dir()

    result = subprocess.run(_train_command(data, out, epochs), env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    epochs_logged = _csv_epochs(out / "training_log.csv")
    # the first run logged 0..killed_at-1; the resumed run continues from the backup (no epoch repeated;
    # a kill between the backup and the CSV row of one epoch may leave that single row out)
    assert epochs_logged == sorted(set(epochs_logged)), epochs_logged
    assert epochs_logged[0] == 0 and epochs_logged[-1] == epochs - 1 and len(epochs_logged) >= epochs - 1
    assert json.loads(state_path.read_text())["completed_epochs"] == epochs
    assert (out / "model.keras").is_file() and not (out / "backup").exists()


def test_cli_train_reports_bad_arguments(tmp_path, capsys):
    from keras_avloc.cli import main

    assert main(["train", "--method", "lvs", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
    data = tmp_path / "data"
    write_tiny_dataset(str(data), count=2)
    assert main(["train", "--method", "lvs", "--data", str(data), "--out", str(tmp_path / "o"), "--split", "nope"]) == 2
    assert "nope.json" in capsys.readouterr().err
    assert main(["train", "--method", "lvs", "--data", str(data), "--out", str(tmp_path / "o"),
                 "--batch-size", "1"]) == 2
    assert "--batch-size: must be an integer >= 2" in capsys.readouterr().err


def test_bf16_init_weights_and_frozen_image_encoder(tmp_path):
    import keras

    from keras_avloc.backbones import ResNet18
    from keras_avloc.training import TrainingError, build_training_model

    source = ResNet18(layer4_stride=1, width=8)
    weights_path = str(tmp_path / "resnet18.weights.h5")
    source.save_weights(weights_path)
    model = build_training_model("lvs", mixed_precision="bf16", init_image_weights=weights_path,
                                 freeze_image_encoder=True, learning_rate=3e-4,
                                 model_kwargs={"backbone_kwargs": {"width": 8}}, run_eagerly=True)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building
    assert model.image_backbone.get_layer("conv1").dtype_policy.name == "mixed_bfloat16"
    np.testing.assert_array_equal(model.image_backbone.get_layer("layer2_0_conv1").kernel.numpy(),
                                  source.get_layer("layer2_0_conv1").kernel.numpy())
    assert not model.image_backbone.trainable and model.audio_encoder.trainable
    assert abs(float(model.optimizer.learning_rate) - 3e-4) < 1e-9
    frozen_before = model.image_backbone.get_layer("layer2_0_conv1").kernel.numpy().copy()
    audio_before = model.audio_backbone.get_layer("conv1").kernel.numpy().copy()
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(size=(4, 64, 64, 3)).astype(np.float32),
             "audio": rng.normal(size=(4, 65, 24, 1)).astype(np.float32)}
    logs = model.train_on_batch(batch, return_dict=True)
    assert np.isfinite(logs["loss"])
    np.testing.assert_array_equal(model.image_backbone.get_layer("layer2_0_conv1").kernel.numpy(), frozen_before)
    assert np.abs(model.audio_backbone.get_layer("conv1").kernel.numpy() - audio_before).max() > 0

    try:
        build_training_model("lvs", init_image_weights=str(tmp_path / "missing.weights.h5"))
    except TrainingError as err:
        assert "port-weights" in str(err)
    else:
        raise AssertionError("a missing weights file must raise TrainingError")


def test_cli_train_offers_avgn_and_rejects_options_of_other_methods(tmp_path, capsys):
    from keras_avloc.cli import main

    data = tmp_path / "data"
    data.mkdir()
    assert main(["train", "--method", "ezvsl", "--data", str(data), "--out", str(tmp_path / "o"), "--depth", "1"]) == 2
    assert "--depth applies to --method avgn" in capsys.readouterr().err
    assert main(["train", "--method", "lvs", "--data", str(data), "--out", str(tmp_path / "o"), "--embed-dim", "8"]) == 2
    assert "--embed-dim" in capsys.readouterr().err
    try:
        main(["train", "--help"])
    except SystemExit:
        pass
    help_text = capsys.readouterr().out
    assert "avgn" in help_text and "--mix-sources" in help_text


@pytest.mark.long
def test_precision_auto_is_bf16_where_native_and_a_resumed_run_keeps_its_own(tmp_path, monkeypatch):
    import keras_avloc.perf as perf
    from keras_avloc.cli import train as train_cli
    from keras_avloc.training import train

    data = tmp_path / "data"
    write_tiny_dataset(str(data))
    common = dict(epochs=1, batch_size=4, image_size=64, clip_seconds=1.0,
                  model_kwargs={"backbone_kwargs": {"width": 4}}, verbose=0)
    monkeypatch.setattr(perf, "bf16_usable", lambda: True)
    assert perf.resolve_precision("auto") == "bf16" and perf.resolve_precision("fp32") is None
    model, _ = train("lvs", str(data), str(tmp_path / "auto"), mixed_precision="auto", **common)
    assert model.dtype_policy.name == "mixed_bfloat16"
    # A float32 run resumed (more epochs) with the default "auto" stays float32 instead of being refused.
    train("lvs", str(data), str(tmp_path / "fp32"), mixed_precision=None, **common)
    model, history = train("lvs", str(data), str(tmp_path / "fp32"), mixed_precision="auto", **{**common, "epochs": 2})
    assert history is not None and model.dtype_policy.name == "float32"

    class Args:
        mixed_precision, precision = None, "fp32"

    assert train_cli._precision(Args) is None
    Args.precision = "auto"
    assert train_cli._precision(Args) == "auto"
    Args.mixed_precision, Args.precision = "bf16", "fp32"
    with pytest.raises(Exception, match="disagree"):
        train_cli._precision(Args)
