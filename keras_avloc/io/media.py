"""Media I/O: audio, frames and videos in the dataset layout.

Every reader raises `MediaError` (a `ValueError`) naming the file and what is wrong, so callers can
count a bad clip as a skip instead of crashing half-way through a dataset. Every writer is atomic: it
writes a hidden temporary file next to the target and renames it into place with `os.replace`, so a
crash (even `kill -9`) never leaves a half-written file under a finished output name.

Layout written by `extract_clip` (see the dataset contract):
    ROOT/frames/<file_id>.jpg   middle frame of the clip
    ROOT/audio/<file_id>.wav    16 kHz mono PCM16, the whole clip
    ROOT/video/<file_id>.mp4    optional copy of the clip
"""

import contextlib
import fractions
import math
import os
import shutil
import struct
import subprocess

import numpy as np

from keras_avloc.io import paths
from keras_avloc.io.errors import AvlocError
from keras_avloc.io.files import atomic_output

SOUNDFILE_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff"}


class MediaError(AvlocError, ValueError):
    """A media file is missing, empty, truncated or not decodable. The message names the file."""


# --------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------


def _check_readable(path):
    if not os.path.exists(path):
        raise MediaError(f"{path}: file does not exist")
    if os.path.isdir(path):
        raise MediaError(f"{path}: is a directory, expected a media file")
    if os.path.getsize(path) == 0:
        raise MediaError(f"{path}: file is empty (0 bytes); re-extract or re-download it")


def _check_wav_not_truncated(path):
    """libsndfile silently reads what is there; compare the header's data size with the file size."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        header = handle.read(12)
        if len(header) < 12 or header[:4] not in (b"RIFF", b"RIFX") or header[8:12] != b"WAVE":
            return  # not RIFF/WAVE (e.g. RF64 or a mislabelled file); let soundfile judge it
        endian = "<" if header[:4] == b"RIFF" else ">"
        position = 12
        while position + 8 <= size:
            handle.seek(position)
            chunk_id, chunk_size = struct.unpack(endian + "4sI", handle.read(8))
            if chunk_id == b"data":
                available = size - position - 8
                if chunk_size not in (0, 0xFFFFFFFF) and chunk_size > available:
                    raise MediaError(
                        f"{path}: truncated WAV: header declares {chunk_size} bytes of audio but the file "
                        f"holds {available}; the download or copy was interrupted, re-extract it"
                    )
                return
            position += 8 + chunk_size + (chunk_size & 1)
        raise MediaError(f"{path}: WAV file has no 'data' chunk (truncated header); re-extract it")


def _read_with_soundfile(path):
    import soundfile

    if os.path.splitext(path)[1].lower() in (".wav", ".wave"):
        _check_wav_not_truncated(path)
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise MediaError(f"{path}: cannot decode audio ({err})") from err
    return data.T, rate  # [C, T]


def _av_error_types():
    import av

    return (av.error.FFmpegError, OSError, EOFError)


def _read_with_pyav(path):
    import av

    errors = _av_error_types()
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise MediaError(f"{path}: has no audio stream; use a clip with sound or drop it from the split")
            stream = container.streams.audio[0]
            rate = stream.rate or stream.codec_context.sample_rate
            expected_seconds = None
            if stream.duration and stream.time_base:
                expected_seconds = float(stream.duration * stream.time_base)
            # Keep the source layout and rate; downmix and resample are done identically for every format.
            resampler = av.AudioResampler(format="fltp")
            chunks = []
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
            for converted in resampler.resample(None):
                chunks.append(converted.to_ndarray())
    except errors as err:
        raise MediaError(f"{path}: cannot decode audio ({err})") from err
    if not chunks:
        raise MediaError(f"{path}: audio stream holds no samples (empty or truncated file)")
    decoded = sum(chunk.shape[1] for chunk in chunks)
    if expected_seconds and decoded < 0.9 * expected_seconds * rate - 0.1 * rate:
        raise MediaError(
            f"{path}: truncated audio: decoded {decoded / rate:.2f} s but the header says {expected_seconds:.2f} s"
        )
    channels = max(chunk.shape[0] for chunk in chunks)
    chunks = [np.repeat(c, channels, axis=0) if c.shape[0] != channels else c for c in chunks]
    wave = np.concatenate(chunks, axis=1).astype(np.float32)
    if expected_seconds:
        # AAC pads its last frame; keep the duration the container declares (what ffprobe reports).
        wave = wave[:, : max(1, int(round(expected_seconds * rate)))]
    return wave, int(rate)


def resample_audio(wave, source_rate, target_rate):
    """Band-limited resampling of a 1-D float wave (libsoxr "HQ", librosa's default resampler).

    Returns the input unchanged when the rates agree; float32 otherwise.
    """
    if int(source_rate) == int(target_rate):
        return np.asarray(wave, np.float32)
    import soxr

    return np.asarray(soxr.resample(np.asarray(wave, np.float32), int(source_rate), int(target_rate), "HQ"), np.float32)


def centre_clip(wave, sample_rate, clip_seconds):
    """EZ-VSL clip selection: start = max(duration/2 - clip/2, 0); shorter waves are tiled; clipped to [-1, 1].

    Args:
        wave: float32 [T] mono wave.
        sample_rate: its rate.
        clip_seconds: output length in seconds.

    Returns:
        float32 [int(round(sample_rate * clip_seconds))].
    """
    length = int(round(sample_rate * clip_seconds))
    duration = wave.shape[0] / float(sample_rate)
    start = int(max(duration / 2.0 - clip_seconds / 2.0, 0.0) * sample_rate)
    clip = wave[start : start + length]
    if clip.shape[0] < length:
        clip = np.tile(clip, int(length / clip.shape[0]) + 1)
    return np.clip(clip[:length], -1.0, 1.0).astype(np.float32)


def _read_soundfile_section(path, clip_seconds):
    """[C, T] samples around the middle of a soundfile-readable file (only the centred clip is decoded)."""
    import soundfile

    if os.path.splitext(path)[1].lower() in (".wav", ".wave"):
        _check_wav_not_truncated(path)
    try:
        info = soundfile.info(path)
        rate, frames = int(info.samplerate), int(info.frames)
        start = int(max(frames / float(rate) / 2.0 - clip_seconds / 2.0, 0.0) * rate)
        data = soundfile.read(path, start=start, frames=int(np.ceil(clip_seconds * rate)), dtype="float32",
                              always_2d=True)[0]
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise MediaError(f"{path}: cannot decode audio ({err})") from err
    return data.T, rate


def read_audio(path, sample_rate=16000, clip_seconds=None):
    """Reads any audio file or video's audio track as mono float32 at `sample_rate`.

    wav/flac/ogg/aiff are read with soundfile, anything else (mp4, mkv, webm, m4a, ...) with PyAV.
    Stereo is downmixed by averaging the channels; other rates are resampled with libsoxr
    (`resample_audio`).

    Args:
        path: audio or video file.
        sample_rate: output rate in Hz.
        clip_seconds: None for the whole file; otherwise the centred clip of that length (`centre_clip`:
            EZ-VSL's selection, tiled when the file is shorter). For soundfile formats only that clip is
            decoded.

    Returns:
        np.float32 [T] in [-1, 1].

    Raises:
        MediaError: the file is missing, empty, truncated, has no audio stream, cannot be decoded or holds
            NaN / infinite samples.

    Example:
        >>> wave = read_audio("datasets/vggss/audio/zpWuikVorYg_000032.wav")  # doctest: +SKIP
        >>> wave.shape  # doctest: +SKIP
        (160000,)
    """
    path = os.fspath(path)
    _check_readable(path)
    soundfile_format = os.path.splitext(path)[1].lower() in SOUNDFILE_EXTENSIONS
    if soundfile_format and clip_seconds is not None:
        channels, rate = _read_soundfile_section(path, clip_seconds)
    elif soundfile_format:
        channels, rate = _read_with_soundfile(path)
    else:
        channels, rate = _read_with_pyav(path)
    if channels.shape[1] == 0:
        raise MediaError(f"{path}: contains no audio samples (empty); re-extract it")
    wave = channels.mean(axis=0).astype(np.float32) if channels.shape[0] > 1 else channels[0].astype(np.float32)
    if not np.all(np.isfinite(wave)):
        raise MediaError(f"{path}: audio contains NaN or infinite samples")
    wave = np.clip(resample_audio(wave, rate, sample_rate), -1.0, 1.0).astype(np.float32)
    return wave if clip_seconds is None else centre_clip(wave, sample_rate, clip_seconds)


def read_multichannel_audio(path, sample_rate, channels):
    """Reads every channel of an audio file or a video's audio track (e.g. 4-channel ambiX) at `sample_rate`.

    Args:
        path: audio or video file (soundfile formats directly, anything else with PyAV).
        sample_rate: output rate in Hz (other rates are resampled with libsoxr, channel by channel).
        channels: the channel count the file must have (4 for first-order ambisonics).

    Returns:
        np.float32 [channels, T].

    Raises:
        MediaError: as `read_audio`, or the file has another number of channels.
    """
    path = os.fspath(path)
    _check_readable(path)
    if os.path.splitext(path)[1].lower() in SOUNDFILE_EXTENSIONS:
        wave, rate = _read_with_soundfile(path)
    else:
        wave, rate = _read_with_pyav(path)
    if wave.shape[0] != int(channels):
        raise MediaError(f"{path}: has {wave.shape[0]} audio channels, {int(channels)} expected (first-order "
                         "ambisonics are 4 channels, ambiX W, Y, Z, X); use the spatial-audio track of the clip")
    if wave.shape[1] == 0:
        raise MediaError(f"{path}: contains no audio samples (empty); re-extract it")
    if not np.all(np.isfinite(wave)):
        raise MediaError(f"{path}: audio contains NaN or infinite samples")
    if int(rate) != int(sample_rate):
        wave = np.stack([resample_audio(channel, rate, sample_rate) for channel in wave])
    return np.asarray(wave, np.float32)


def write_wav(path, wave, sample_rate=16000):
    """Writes a mono (or [T, C]) float wave in [-1, 1] as PCM16 WAV, atomically.

    Args:
        path: output .wav path (parent directories are created).
        wave: float array [T] or [T, C]; values outside [-1, 1] are clipped.
        sample_rate: rate in Hz stored in the header.

    Example:
        >>> write_wav("tone.wav", np.sin(np.arange(16000) / 10.0) * 0.5)  # doctest: +SKIP
    """
    import soundfile

    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim not in (1, 2) or wave.shape[0] == 0:
        raise MediaError(f"{path}: refusing to write audio of shape {wave.shape}; expected a non-empty [T] wave")
    pcm = np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)
    with atomic_output(path) as tmp:
        soundfile.write(tmp, pcm, int(sample_rate), subtype="PCM_16", format="WAV")


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


LARGE_IMAGE_PIXELS = 4096 * 4096
"""Images with more pixels than this are decoded at reduced size when the caller needs fewer pixels.
Images beyond PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS` x 2, about 179 million
pixels) are refused with a `MediaError`."""


def open_image(source, min_side=None, name=None):
    """Decodes a JPEG/PNG into a fully loaded RGB `PIL.Image`; corrupt or truncated data raise `MediaError`.

    Args:
        source: a path, or the encoded bytes (e.g. from a TFRecord).
        min_side: the smallest side the caller will use (e.g. the model's input size). An image of more
            than `LARGE_IMAGE_PIXELS` pixels is then decoded at reduced size (JPEG DCT scaling, or a
            box-filter reduction for other formats) keeping its short side at least `2 * min_side`, so a
            10000 x 10000 photo costs megabytes, not gigabytes. Ordinary frames (up to 4K) are always
            decoded in full, exactly as the published pipelines do.
        name: how to call bytes input in messages.

    Returns:
        `PIL.Image.Image` in mode "RGB".
    """
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray, memoryview)):
        label, stream = name or "image bytes", io.BytesIO(bytes(source))
    else:
        label = stream = os.fspath(source)
        _check_readable(label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # large images are reduced below
            image = Image.open(stream)
        with image:
            width, height = image.size
            if min_side and width * height > LARGE_IMAGE_PIXELS:
                factor = max(1, min(width, height) // (2 * int(min_side)))
                if factor > 1:
                    image.draft("RGB", (max(1, width // factor), max(1, height // factor)))  # JPEG: scaled DCT
                    image.load()
                    if min(image.size) > 4 * int(min_side):  # not a JPEG (draft did nothing): reduce after decoding
                        image = image.reduce(max(1, min(image.size) // (2 * int(min_side))))
            image.load()  # forces a full decode: truncated JPEGs fail here
            return image.convert("RGB") if image.mode != "RGB" else image.copy()
    except Image.DecompressionBombError as err:
        raise MediaError(f"{label}: image too large to decode safely ({err}); resize it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(f"{label}: corrupt or truncated image ({err}); re-extract the frame") from err


def read_image(source, min_side=None, name=None):
    """`open_image` as an RGB uint8 array [H, W, 3] (see `open_image` for the arguments)."""
    return np.asarray(open_image(source, min_side, name), dtype=np.uint8)


def read_image_cv2(path):
    """RGB uint8 [H, W, 3] decoded by OpenCV (libjpeg-turbo; faster, pixels differ slightly from PIL).

    Raises:
        MediaError: missing, empty, truncated (no JPEG end-of-image marker) or undecodable file.
    """
    import cv2

    path = os.fspath(path)
    _check_readable(path)
    data = np.fromfile(path, np.uint8)
    if data[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].tobytes():
        # libjpeg would decode a truncated JPEG into a half-grey frame without complaint.
        raise MediaError(f"{path}: truncated JPEG (no end-of-image marker); re-extract the frame")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError(f"{path}: corrupt or undecodable image; re-extract the frame")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path, size=None):
    """Reads an 8-bit mask PNG as bool [H, W] (pixel > 127 = object), optionally resized (nearest) to
    `size` x `size`.

    Raises:
        MediaError: missing, empty or undecodable file.
    """
    from PIL import Image

    grey = read_image(path)[..., 0]
    if size is not None and grey.shape != (size, size):
        grey = np.asarray(Image.fromarray(grey).resize((int(size), int(size)), Image.NEAREST))
    return grey > 127


def write_jpg(path, rgb, quality=95):
    """Writes an RGB uint8 [H, W, 3] image as JPEG, atomically.

    Args:
        path: output path (parent directories are created).
        rgb: uint8 array [H, W, 3] (a [H, W] greyscale array is also accepted).
        quality: JPEG quality 1..100.
    """
    import cv2

    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise MediaError(f"{path}: expected an RGB image [H, W, 3], got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise MediaError(f"{path}: JPEG encoding failed for an image of shape {rgb.shape}")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(encoded.tobytes())


def write_png(path, mask):
    """Writes a boolean mask [H, W] as an 8-bit PNG (255 = object), atomically."""
    import cv2

    ok, encoded = cv2.imencode(".png", np.where(np.asarray(mask), 255, 0).astype(np.uint8))
    if not ok:
        raise MediaError(f"{path}: PNG encoding failed for a mask of shape {np.shape(mask)}")
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(encoded.tobytes())


# --------------------------------------------------------------------------------------------------
# Video frames
# --------------------------------------------------------------------------------------------------


def _open_video(path):
    import av

    path = os.fspath(path)
    _check_readable(path)
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
        _check_readable(path)
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
