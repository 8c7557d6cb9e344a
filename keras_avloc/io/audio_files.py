"""Audio files: decoding any container to a float32 wave at a chosen rate, and writing 16-bit WAV atomically.

Part of `keras_avloc.io.media` (which re-exports every name here); readers raise `MediaError` naming the file.
"""

import os
import struct

import numpy as np

from keras_avloc.io.errors import MediaError
from keras_avloc.io.files import atomic_output, check_readable

SOUNDFILE_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".aif", ".aiff"}


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
    check_readable(path)
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
    check_readable(path)
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
