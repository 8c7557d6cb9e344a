"""Heatmap overlay videos: per-frame heatmaps blended on the frames, original audio muxed back."""

import numpy as np

from keras_avloc.viz.figures import DEFAULT_CMAP


def blend_frames(frames_rgb, heatmaps, alpha=0.5, normalize="global", cmap=DEFAULT_CMAP):
    """Blends per-frame heatmaps onto video frames.

    Args:
        frames_rgb: uint8 [N, H, W, 3].
        heatmaps: [M, h, w] maps; when M != N, frame i shows map floor(i · M / N) (maps spread evenly
            over the clip).
        alpha: heatmap opacity.
        normalize: "global" (one min/max for the whole clip, so brightness is comparable over time) or
            "frame" (min-max per map).
        cmap: matplotlib colormap name.

    Returns:
        uint8 [N, H, W, 3].
    """
    import cv2
    import matplotlib

    frames = np.asarray(frames_rgb)
    maps = np.asarray(heatmaps, dtype=np.float32)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [N, H, W, 3] RGB, got shape {frames.shape}.")
    if maps.ndim != 3 or len(maps) == 0:
        raise ValueError(f"heatmaps must be [M, h, w] with M >= 1, got shape {maps.shape}.")
    if not np.all(np.isfinite(maps)):
        raise ValueError("heatmaps contain NaN/inf values; fix the model output before rendering.")
    if normalize == "global":
        low, high = float(maps.min()), float(maps.max())
        maps = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    elif normalize == "frame":
        low = maps.min(axis=(1, 2), keepdims=True)
        span = maps.max(axis=(1, 2), keepdims=True) - low
        maps = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0.0)
    else:
        raise ValueError(f"normalize must be 'global' or 'frame', got {normalize!r}.")
    colormap = matplotlib.colormaps[cmap]
    height, width = frames.shape[1:3]
    picks = (np.arange(len(frames)) * len(maps)) // len(frames)
    out = np.empty_like(frames, dtype=np.uint8)
    for index, frame in enumerate(frames):
        heat = cv2.resize(maps[picks[index]], (width, height), interpolation=cv2.INTER_LINEAR)
        coloured = colormap(np.clip(heat, 0, 1))[..., :3] * 255.0
        out[index] = np.clip((1 - alpha) * frame.astype(np.float32) + alpha * coloured + 0.5, 0, 255).astype(np.uint8)
    return out


def write_overlay_video(path, frames_rgb, heatmaps, fps, audio=None, sample_rate=16000, alpha=0.5, normalize="global"):
    """Writes an mp4 of the heatmaps blended on the frames with the original audio muxed back.

    Args:
        path: output .mp4 (written atomically by `keras_avloc.io.media.write_video`).
        frames_rgb: uint8 [N, H, W, 3]; heatmaps: [M, h, w] (see `blend_frames`).
        fps: frame rate.
        audio: optional float wave [T] in [-1, 1] at `sample_rate`.

    Returns:
        `path`.

    Example:
        >>> write_overlay_video("out.mp4", frames, maps, 25, audio=wave)  # doctest: +SKIP
    """
    from keras_avloc.io.media import write_video

    blended = blend_frames(frames_rgb, heatmaps, alpha=alpha, normalize=normalize)
    write_video(path, blended, fps, audio=audio, sample_rate=sample_rate)
    return path


def overlay_video_file(video_path, heatmaps, out_path, sample_rate=16000, alpha=0.5):
    """Reads `video_path` (frames and audio), blends `heatmaps` and writes `out_path` with the audio."""
    from keras_avloc.io.media import read_audio, read_frames

    frames, fps = read_frames(video_path)
    try:
        audio = read_audio(video_path, sample_rate)
    except Exception:  # a silent video: keep the frames, write without audio
        audio = None
    return write_overlay_video(out_path, frames, heatmaps, fps, audio=audio, sample_rate=sample_rate, alpha=alpha)
