"""Video files and clips: frames and audio out of a container (PyAV), videos written, clips cut into the dataset
layout (`extract_clip`).

Part of `keras_avloc.io.media` (which re-exports every name here).
"""

import contextlib
import fractions
import math
import os
import shutil
import subprocess

import numpy as np

from keras_avloc.io import paths
from keras_avloc.io.audio_files import _av_error_types, read_audio, read_multichannel_audio, write_wav
from keras_avloc.io.errors import MediaError
from keras_avloc.io.files import atomic_output, check_readable
from keras_avloc.io.images import write_jpg


def _open_video(path):
    import av

    path = os.fspath(path)
    check_readable(path)
    try:
        container = av.open(path)
    except _av_error_types() as err:
        raise MediaError(f"{path}: cannot open video ({err})") from err
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: has no video stream")
    return container


def _stream_fps(stream):
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else None


def _frame_seconds(frame, stream):
    if frame.pts is None or stream.time_base is None:
        return None
    start = stream.start_time or 0
    return float((frame.pts - start) * stream.time_base)


def _video_duration(container, stream):
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000.0
    return None


def duration_seconds(path):
    """Duration of a media file or URL in seconds (container header, else longest stream), or None.

    Raises:
        MediaError: the file cannot be opened.
    """
    import av

    path = os.fspath(path)
    if "://" not in path:
        check_readable(path)
    try:
        with av.open(path, timeout=30.0) as container:
            if container.duration:
                return container.duration / 1_000_000.0
            durations = [_video_duration(container, s) for s in container.streams if s.duration]
            return max(durations) if durations else None
    except _av_error_types() as err:
        raise MediaError(f"{path}: cannot open media ({err})") from err


def middle_frame(path):
    """The RGB frame shown at the middle of a video (the last frame starting at or before duration / 2).

    Seeks to the keyframe before the middle and decodes forward to that frame;
    when the duration or timestamps are unknown, decodes everything and takes frame N // 2.

    Returns:
        np.uint8 [H, W, 3].

    Raises:
        MediaError: missing, empty, truncated or undecodable file, or no video stream.
    """
    path = os.fspath(path)
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        duration = _video_duration(container, stream)
        chosen = None
        if duration and stream.time_base:
            target = duration / 2.0
            start = stream.start_time or 0
            with contextlib.suppress(*_av_error_types()):
                container.seek(int(target / stream.time_base) + start, stream=stream, backward=True)
            previous = None
            for frame in container.decode(stream):
                seconds = _frame_seconds(frame, stream)
                if seconds is None:
                    previous = None
                    break
                if seconds > target + 1e-6:
                    chosen = previous if previous is not None else frame
                    break
                previous = frame
            if chosen is None and previous is not None:
                last = _frame_seconds(previous, stream)
                period = 1.0 / (_stream_fps(stream) or 25.0)
                if last + 2.0 * period < target:
                    raise MediaError(
                        f"{path}: truncated video: frames stop at {last:.2f} s but the header says "
                        f"{duration:.2f} s; re-download or re-encode it"
                    )
                chosen = previous
        if chosen is None:
            container.seek(0)
            frames = list(container.decode(stream))
            if not frames:
                raise MediaError(f"{path}: video stream holds no decodable frames")
            chosen = frames[len(frames) // 2]
        return chosen.to_ndarray(format="rgb24")
    except _av_error_types() as err:
        raise MediaError(f"{path}: cannot decode video frames ({err})") from err
    finally:
        container.close()


def read_frames(path, fps=None):
    """Decodes all frames of a video, optionally resampled to `fps`.

    Args:
        path: video file.
        fps: output frame rate; None keeps every decoded frame. Resampling takes, for each output time
            k / fps, the last source frame shown at that time.

    Returns:
        (np.uint8 [N, H, W, 3], fps) — the frames and their rate.

    Raises:
        MediaError: missing/undecodable file, no video stream or no frames.
    """
    path = os.fspath(path)
    container = _open_video(path)
    try:
        stream = container.streams.video[0]
        source_fps = _stream_fps(stream)
        duration = _video_duration(container, stream)
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(_frame_seconds(frame, stream))
    except _av_error_types() as err:
        raise MediaError(f"{path}: cannot decode video frames ({err})") from err
    finally:
        container.close()
    if not frames:
        raise MediaError(f"{path}: video stream holds no decodable frames")
    if duration and times[-1] is not None and source_fps and times[-1] < 0.9 * duration - 2.0 / source_fps:
        raise MediaError(
            f"{path}: truncated video: frames stop at {times[-1]:.2f} s but the header says {duration:.2f} s"
        )
    video = np.stack(frames)
    if fps is None:
        return video, source_fps
    if any(t is None for t in times):
        if not source_fps:
            raise MediaError(f"{path}: frames have no timestamps and the stream has no frame rate")
        times = [i / source_fps for i in range(len(frames))]
    times = np.asarray(times, dtype=np.float64)
    frame_period = 1.0 / source_fps if source_fps else 0.0
    count = max(1, int(math.floor((times[-1] + frame_period - times[0]) * fps + 1e-6)))
    targets = times[0] + np.arange(count) / float(fps)
    picks = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(frames) - 1)
    return video[picks], float(fps)


def write_video(path, frames_rgb, fps, audio=None, sample_rate=16000):
    """Writes an H.264 mp4 (yuv420p, faststart) with optional mono AAC audio via PyAV, atomically.

    Args:
        path: output .mp4 path.
        frames_rgb: uint8 [N, H, W, 3] (odd sizes are padded by edge replication to even sizes).
        fps: frame rate (float or Fraction).
        audio: optional float wave [T] in [-1, 1] (or [T, C], downmixed to mono).
        sample_rate: rate of `audio` in Hz.

    Example:
        >>> frames = np.zeros((30, 48, 64, 3), np.uint8)  # doctest: +SKIP
        >>> write_video("clip.mp4", frames, 10, audio=np.zeros(48000), sample_rate=16000)  # doctest: +SKIP
    """
    import av

    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.shape[0] == 0:
        raise MediaError(f"{path}: expected frames [N, H, W, 3], got shape {frames_rgb.shape}")
    if frames_rgb.dtype != np.uint8:
        frames_rgb = np.clip(frames_rgb, 0, 255).astype(np.uint8)
    height, width = frames_rgb.shape[1:3]
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    if any(p[1] for p in pad):
        frames_rgb = np.pad(frames_rgb, pad, mode="edge")
        height, width = frames_rgb.shape[1:3]
    rate = fractions.Fraction(fps).limit_denominator(1001)
    codec = "libx264" if "libx264" in av.codecs_available else "h264"
    with atomic_output(path) as tmp:
        with av.open(tmp, mode="w", format="mp4", options={"movflags": "faststart"}) as container:
            video_stream = container.add_stream(codec, rate=rate)
            video_stream.width, video_stream.height = width, height
            video_stream.pix_fmt = "yuv420p"
            audio_stream = None
            if audio is not None:
                wave = np.asarray(audio, dtype=np.float32)
                if wave.ndim == 2:
                    wave = wave.mean(axis=1)
                audio_stream = container.add_stream("aac", rate=int(sample_rate), layout="mono")
            for image in frames_rgb:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                for packet in video_stream.encode(frame):
                    container.mux(packet)
            for packet in video_stream.encode():
                container.mux(packet)
            if audio_stream is not None:
                frame_size = audio_stream.codec_context.frame_size or 1024
                wave = np.clip(wave, -1.0, 1.0)
                for offset in range(0, len(wave), frame_size):
                    chunk = np.ascontiguousarray(wave[offset : offset + frame_size][None, :])
                    frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                    frame.sample_rate = int(sample_rate)
                    frame.pts = offset
                    for packet in audio_stream.encode(frame):
                        container.mux(packet)
                for packet in audio_stream.encode():
                    container.mux(packet)


# --------------------------------------------------------------------------------------------------
# Clip extraction into the dataset layout
# --------------------------------------------------------------------------------------------------


def check_file_id(file_id):
    """Returns `file_id` if it is a safe clip id (`keras_avloc.io.paths`); raises `MediaError` otherwise."""
    try:
        return paths.check_file_id(file_id)
    except paths.UnsafePathError as err:
        raise MediaError(str(err)) from None


def clip_output_paths(root, file_id, keep_video=False):
    """{"frame": ROOT/frames/<id>.jpg, "audio": ROOT/audio/<id>.wav[, "video": ROOT/video/<id>.mp4]}."""
    check_file_id(file_id)
    root = os.path.abspath(os.fspath(root))
    outputs = {
        "frame": os.path.join(root, "frames", f"{file_id}.jpg"),
        "audio": os.path.join(root, "audio", f"{file_id}.wav"),
    }
    if keep_video:
        outputs["video"] = os.path.join(root, "video", f"{file_id}.mp4")
    for path in outputs.values():
        if not paths.is_inside(root, path):
            raise MediaError(f"output path {path} escapes the dataset root {root}")
    return outputs


def clip_is_complete(root, file_id, keep_video=False):
    """True when every output of `extract_clip` for this id already exists (resume check)."""
    return all(os.path.exists(p) for p in clip_output_paths(root, file_id, keep_video).values())


def _store_as_mp4(source, target):
    with atomic_output(target) as tmp:
        if os.path.splitext(source)[1].lower() in (".mp4", ".m4v"):
            shutil.copyfile(source, tmp)
            return
        command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", source, "-map", "0:v:0", "-map", "0:a:0?",
                   "-c", "copy", "-movflags", "+faststart", "-f", "mp4", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise MediaError(f"{source}: cannot re-mux to mp4 ({result.stderr.strip()[-300:]})")


def extract_clip(video_path, root, file_id, keep_video=False, sample_rate=16000, channels=1):
    """Writes one clip into the dataset layout: middle frame, whole-clip audio and optionally the video.

    Everything is decoded before anything is written, so a bad file leaves no outputs; the jpg is
    written last, after the wav (and mp4), each atomically.

    Args:
        video_path: source video (mp4 or any container PyAV reads) with an audio track.
        root: dataset root.
        file_id: output name stem, e.g. "zpWuikVorYg_000032".
        keep_video: also store the source as ROOT/video/<file_id>.mp4 (copied; other containers are
            re-muxed to mp4 with ffmpeg).
        sample_rate: audio rate in Hz (16000 for the dataset layout; 24000 for 360° clips).
        channels: 1 (mono, downmixed) or the channel count to keep (4: a first-order ambiX track, which the
            file must have).

    Returns:
        dict of written paths {"frame", "audio"[, "video"]}.

    Raises:
        MediaError: the video cannot be decoded or has no audio stream.
    """
    video_path = os.fspath(video_path)
    paths = clip_output_paths(root, file_id, keep_video)
    frame = middle_frame(video_path)
    if int(channels) > 1:
        wave = read_multichannel_audio(video_path, sample_rate, channels).T
    else:
        wave = read_audio(video_path, sample_rate=sample_rate)
    if keep_video and os.path.abspath(video_path) != os.path.abspath(paths["video"]):
        _store_as_mp4(video_path, paths["video"])
    write_wav(paths["audio"], wave, sample_rate=sample_rate)
    write_jpg(paths["frame"], frame)
    return paths
