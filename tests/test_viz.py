"""Figures render to PNG without a display; overlay videos carry the blended frames and the audio."""

import matplotlib
import numpy as np
import pytest

from keras_avloc.viz import (
    blend_frames,
    four_panel_figure,
    heatmap_grid,
    overlay_heatmap,
    per_source_figure,
    success_curve_figure,
    trimap_overlay,
    write_overlay_video,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


def test_four_panel_figure_writes_png(tmp_path):
    path = tmp_path / "panels" / "four.png"
    figure = four_panel_figure(_image(), np.random.default_rng(1).random((7, 7)), path=str(path), title="cIoU 0.42")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert len(figure.axes) == 4 and figure._suptitle.get_text() == "cIoU 0.42"
    assert not list(tmp_path.glob("panels/.tmp_*"))  # atomic write leaves no temp file


def test_overlay_heatmap_blends_toward_colormap():
    image = np.zeros((8, 8, 3), np.uint8)
    heat = np.zeros((2, 2))
    heat[0, 0] = 1.0
    out = overlay_heatmap(image, heat, alpha=1.0)
    top = matplotlib.colormaps["viridis"](1.0)[:3]
    np.testing.assert_allclose(out[0, 0] / 255.0, top, atol=1 / 255 + 1e-6)
    with pytest.raises(ValueError, match="NaN"):
        overlay_heatmap(image, np.full((2, 2), np.nan))


def test_trimap_overlay_classes(tmp_path):
    similarity = np.array([[0.9, 0.5], [0.1, 0.7]], dtype=np.float32)
    _, trimap = trimap_overlay(np.zeros((2, 2, 3), np.uint8), similarity, eps_p=0.65, eps_n=0.4, path=str(tmp_path / "t.png"))
    np.testing.assert_array_equal(trimap, [[2, 1], [0, 2]])
    assert (tmp_path / "t.png").read_bytes()[:8] == PNG_MAGIC


def test_per_source_success_and_grid_figures(tmp_path):
    rng = np.random.default_rng(2)
    per_source_figure(_image(), rng.random((3, 7, 7)), labels=["cello", "guitar", "head 3"], path=str(tmp_path / "s.png"))
    thresholds = np.linspace(0, 1, 21)
    success_curve_figure(
        {"model": (thresholds, 1 - thresholds, 0.5), "center": (thresholds, (1 - thresholds) ** 2, 0.33)},
        path=str(tmp_path / "curve.png"),
    )
    heatmap_grid([_image(), None, _image()], list(rng.random((3, 7, 7))), [0.9, 0.5, 0.1], names=["a", "b", "c"],
                 path=str(tmp_path / "grid.png"), columns=2)
    for name in ("s.png", "curve.png", "grid.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC


def test_blend_frames_maps_heatmaps_evenly_over_frames():
    frames = np.zeros((6, 8, 8, 3), np.uint8)
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1] = 1.0  # second half of the clip is hot
    out = blend_frames(frames, maps, alpha=1.0, normalize="global")
    np.testing.assert_array_equal(out[0], out[2])
    assert out[3:].mean() > out[:3].mean()
    with pytest.raises(ValueError):
        blend_frames(frames, np.zeros((0, 4, 4)))


def test_write_overlay_video_keeps_audio(tmp_path):
    av = pytest.importorskip("av")
    frames = np.full((10, 32, 32, 3), 90, np.uint8)
    heatmaps = np.random.default_rng(3).random((5, 7, 7)).astype(np.float32)
    wave = 0.2 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)
    path = tmp_path / "overlay.mp4"
    write_overlay_video(str(path), frames, heatmaps, fps=10, audio=wave, sample_rate=16000)
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == 1
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 10 and decoded[0].shape == (32, 32, 3)
    assert not np.allclose(decoded[0], 90, atol=3)  # the heatmap was blended in
