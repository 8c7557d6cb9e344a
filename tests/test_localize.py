"""`avloc localize` on a model trained by `avloc train`: image+audio -> four-panel PNG, video -> overlay mp4."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from test_train import write_tiny_dataset


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from keras_avloc.cli import main

    root = tmp_path_factory.mktemp("localize")
    data = root / "data"
    write_tiny_dataset(str(data), count=4)
    out = root / "run"
    code = main(["train", "--method", "lvs", "--data", str(data), "--out", str(out), "--epochs", "1",
                 "--batch-size", "4", "--image-size", "64", "--clip-seconds", "0.5", "--width", "8", "--eager",
                 "--quiet"])
    assert code == 0
    return root, data, out / "model.keras"


def test_localize_image_writes_four_panel_png(trained, capsys):
    from keras_avloc.cli import main

    root, data, checkpoint = trained
    out = root / "figure.png"
    code = main(["localize", "--checkpoint", str(checkpoint), "--image", str(data / "frames" / "clip_00.jpg"),
                 "--audio", str(data / "audio" / "clip_00.wav"), "--out", str(out), "--image-size", "64",
                 "--clip-seconds", "0.5"])
    assert code == 0, capsys.readouterr().err
    import cv2

    figure = cv2.imread(str(out))
    assert figure is not None and figure.shape[1] > 2 * figure.shape[0]  # four panels side by side


def test_localize_video_writes_overlay_with_audio(trained, capsys):
    from keras_avloc.cli import main
    from keras_avloc.io.media import read_audio, read_frames, write_video

    root, _, checkpoint = trained
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(10, 64, 64, 3)).astype(np.uint8)
    t = np.arange(16000) / 16000.0
    wave = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    video = root / "clip.mp4"
    write_video(str(video), frames, 10, audio=wave, sample_rate=16000)
    out = root / "overlay.mp4"
    code = main(["localize", "--checkpoint", str(checkpoint), "--video", str(video), "--out", str(out),
                 "--image-size", "64", "--clip-seconds", "0.5", "--heatmap-fps", "4"])
    assert code == 0, capsys.readouterr().err
    overlay, fps = read_frames(str(out))
    assert overlay.shape[1:] == (64, 64, 3) and abs(len(overlay) - 10) <= 1 and abs(fps - 10) < 0.5
    assert not np.array_equal(overlay[0], frames[0])  # heatmap blended in
    assert read_audio(str(out)).shape[0] > 8000


def test_localize_reports_bad_arguments(trained, tmp_path, capsys):
    from keras_avloc.cli import main
    from keras_avloc.cli.localize import audio_windows

    root, data, checkpoint = trained
    assert main(["localize", "--checkpoint", str(checkpoint), "--image", str(data / "frames" / "clip_00.jpg"),
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "--audio" in capsys.readouterr().err
    assert main(["localize", "--checkpoint", str(tmp_path / "none.keras"), "--video", "v.mp4",
                 "--out", "o.mp4"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["localize", "--checkpoint", str(checkpoint), "--image", str(data / "frames" / "clip_00.jpg"),
                 "--audio", str(data / "audio" / "clip_00.wav"), "--out", str(tmp_path / "x.mp4")]) == 2
    assert ".png" in capsys.readouterr().err
    assert main(["localize", "--checkpoint", str(checkpoint), "--image", str(data / "frames" / "clip_00.jpg"),
                 "--audio", str(data / "audio" / "clip_00.wav"), "--out", str(tmp_path / "x.png"),
                 "--ogl", "0.4"]) == 2
    assert "EZ-VSL" in capsys.readouterr().err

    wave = np.arange(16000, dtype=np.float32)
    windows = audio_windows(wave, [0.0, 0.5, 1.0], clip_seconds=0.5)
    assert windows.shape == (3, 8000)
    assert windows[0, 0] == 0 and windows[1, 0] == 4000 and windows[2, -1] == 15999  # kept inside the wave
