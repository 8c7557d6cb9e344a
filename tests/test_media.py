"""keras_avloc.io.media on small generated files (tones, brightness-coded frames, broken files)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from keras_avloc.io import files, media

FPS = 10
FRAMES = 30  # 3 s at 10 fps; frame i has brightness 8 * i so decoded frames can be identified
TONE_HZ = 440.0


def tone(seconds, rate, amplitude=0.5, hz=TONE_HZ):
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def brightness_frames(count=FRAMES, height=48, width=64):
    return np.stack([np.full((height, width, 3), 8 * i, np.uint8) for i in range(count)])


def dominant_hz(wave, rate):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1.0 / rate)[np.argmax(spectrum)]


def leftover_temps(directory):
    return [n for n in os.listdir(directory) if files.TEMP_MARKER in n]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    with_audio = folder / "with_audio.mp4"
    without_audio = folder / "no_audio.mp4"
    media.write_video(with_audio, brightness_frames(), FPS, audio=tone(3.0, 16000), sample_rate=16000)
    media.write_video(without_audio, brightness_frames(), FPS)
    return {"with_audio": str(with_audio), "no_audio": str(without_audio)}


def test_read_audio_downmixes_and_resamples_stereo_44k(tmp_path):
    rate = 44100
    left, right = tone(1.0, rate, 0.6), tone(1.0, rate, 0.2)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), rate, subtype="PCM_16")

    wave = media.read_audio(path, sample_rate=16000)

    assert wave.dtype == np.float32 and wave.ndim == 1 and wave.shape[0] == 16000
    expected = tone(1.0, 16000, 0.4)  # mean of the channels, sampled directly at 16 kHz
    interior = slice(200, -200)  # resampling filters ring at the edges
    np.testing.assert_allclose(wave[interior], expected[interior], atol=3e-3)
    assert np.all(np.abs(wave) <= 1.0)


def test_read_audio_keeps_rate_when_equal(tmp_path):
    path = tmp_path / "mono.flac"
    soundfile.write(path, tone(0.5, 16000), 16000)
    np.testing.assert_allclose(media.read_audio(path), tone(0.5, 16000), atol=1e-4)


@pytest.mark.parametrize("kind", ["empty_wav", "zero_bytes", "truncated_wav", "garbage", "missing"])
def test_read_audio_rejects_bad_files(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    if kind == "empty_wav":
        soundfile.write(path, np.zeros((0,), np.float32), 16000, subtype="PCM_16")
    elif kind == "zero_bytes":
        path.write_bytes(b"")
    elif kind == "truncated_wav":
        soundfile.write(path, tone(1.0, 16000), 16000, subtype="PCM_16")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(3000))
    with pytest.raises(media.MediaError) as error:
        media.read_audio(path)
    assert str(path) in str(error.value)
    if kind == "truncated_wav":
        assert "truncated" in str(error.value)


def test_write_wav_is_atomic_pcm16_and_clipped(tmp_path):
    wave = np.concatenate([tone(0.25, 16000), [1.5, -2.0]]).astype(np.float32)
    path = tmp_path / "sub" / "out.wav"
    media.write_wav(path, wave)

    info = soundfile.info(path)
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
    back, _ = soundfile.read(path, dtype="int16")
    np.testing.assert_array_equal(back[:-2], np.round(wave[:-2] * 32767).astype(np.int16))
    np.testing.assert_array_equal(back[-2:], [32767, -32767])
    assert leftover_temps(path.parent) == []
    with pytest.raises(media.MediaError):
        media.write_wav(tmp_path / "empty.wav", np.zeros(0))
    assert not (tmp_path / "empty.wav").exists()


def test_atomic_output_never_leaves_a_partial_file(tmp_path):
    target = tmp_path / "result.bin"
    with pytest.raises(RuntimeError):
        with files.atomic_output(target) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and leftover_temps(tmp_path) == []


def test_remove_stale_temp_files_only_removes_dead_writers(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".clip.wav.{dead_pid}.abcd1234{files.TEMP_MARKER}"
    live = tmp_path / f".clip.jpg.{os.getpid()}.abcd1234{files.TEMP_MARKER}"
    finished = tmp_path / "clip.wav"
    for path in (stale, live, finished):
        path.write_bytes(b"x")
    assert files.remove_stale_temp_files(tmp_path) == 1
    assert not stale.exists() and live.exists() and finished.exists()


def test_jpg_round_trip_and_corrupt_images(tmp_path):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 200  # pure red: checks RGB (not BGR) order
    path = tmp_path / "frame.jpg"
    media.write_jpg(path, rgb, quality=95)
    back = media.read_image(path)
    assert back.shape == (48, 64, 3)
    assert abs(int(back[..., 0].mean()) - 200) <= 3 and back[..., 2].mean() < 5
    assert leftover_temps(tmp_path) == []

    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(path.read_bytes()[:200])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff" + os.urandom(500))
    for bad in (truncated, garbage, tmp_path / "missing.jpg"):
        with pytest.raises(media.MediaError) as error:
            media.read_image(bad)
        assert str(bad) in str(error.value)
    with pytest.raises(media.MediaError):
        media.write_jpg(tmp_path / "bad.jpg", np.zeros((4, 4, 4), np.uint8))


def test_write_video_is_faststart_h264_with_aac(videos):
    import av

    data = open(videos["with_audio"], "rb").read()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")  # faststart: playable/seekable over HTTP
    with av.open(videos["with_audio"]) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"


def test_read_frames_and_middle_frame(videos):
    frames, fps = media.read_frames(videos["with_audio"])
    assert frames.shape == (FRAMES, 48, 64, 3) and frames.dtype == np.uint8 and fps == pytest.approx(FPS)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), 8 * np.arange(FRAMES), atol=3)

    middle = media.middle_frame(videos["with_audio"])
    assert middle.shape == (48, 64, 3)
    assert abs(middle.mean() - 8 * (FRAMES // 2)) <= 3  # frame shown at t = 1.5 s is frame 15

    half_rate, rate = media.read_frames(videos["with_audio"], fps=5)
    assert rate == 5 and half_rate.shape[0] == FRAMES // 2
    np.testing.assert_allclose(half_rate.mean(axis=(1, 2, 3)), 8 * np.arange(0, FRAMES, 2), atol=3)


def test_read_audio_from_mp4(videos):
    wave = media.read_audio(videos["with_audio"], sample_rate=16000)
    assert wave.shape[0] == 48000  # the container's declared duration (AAC padding trimmed)
    assert dominant_hz(wave[2000:-2000], 16000) == pytest.approx(TONE_HZ, abs=3)
    rms = np.sqrt(np.mean(wave[2000:-2000] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    assert media.read_audio(videos["with_audio"], sample_rate=8000).shape[0] == 24000


def test_mp4_without_audio_and_truncated_mp4(videos, tmp_path):
    with pytest.raises(media.MediaError, match="no audio stream"):
        media.read_audio(videos["no_audio"])
    assert media.middle_frame(videos["no_audio"]).shape == (48, 64, 3)

    with pytest.raises(media.MediaError):
        media.extract_clip(videos["no_audio"], tmp_path / "root", "silent_clip")
    assert not (tmp_path / "root" / "frames" / "silent_clip.jpg").exists()

    truncated = tmp_path / "truncated.mp4"
    data = open(videos["with_audio"], "rb").read()
    truncated.write_bytes(data[: len(data) // 3])
    for reader in (media.read_audio, media.middle_frame, media.read_frames):
        with pytest.raises(media.MediaError):
            reader(truncated)


def test_extract_clip_writes_the_dataset_layout(videos, tmp_path):
    root = tmp_path / "root"
    paths = media.extract_clip(videos["with_audio"], root, "abcdefghijk_000001", keep_video=True)

    assert paths["frame"] == str(root / "frames" / "abcdefghijk_000001.jpg")
    assert abs(media.read_image(paths["frame"]).mean() - 8 * (FRAMES // 2)) <= 4
    info = soundfile.info(paths["audio"])
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 48000)
    assert open(paths["video"], "rb").read() == open(videos["with_audio"], "rb").read()
    assert media.clip_is_complete(root, "abcdefghijk_000001", keep_video=True)
    assert not media.clip_is_complete(root, "other_000001")
    for sub in ("frames", "audio", "video"):
        assert leftover_temps(root / sub) == []
    for bad_id in ("../escape", "a/b", ".hidden", "", "clip\n", "a..b"):
        with pytest.raises(media.MediaError):
            media.extract_clip(videos["with_audio"], root, bad_id)


def test_duration_seconds(videos):
    assert media.duration_seconds(videos["with_audio"]) == pytest.approx(3.0, abs=0.1)
