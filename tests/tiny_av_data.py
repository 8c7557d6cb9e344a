"""Tiny audio-visual datasets for tests: a coloured square on grey noise, sounding as its colour's tone."""

import json
import os

import numpy as np

COLOURS = {"red": (230, 30, 30), "blue": (30, 30, 230), "green": (30, 200, 30)}
TONES = {"red": 440.0, "blue": 2500.0, "green": 1200.0}


def write_colour_tone_split(root, classes=("red", "blue"), count=8, size=64, seconds=1.0, split="train", seed=0,
                            prefix="clip", audio_key=False, masks=False):
    """Writes frames/<id>.jpg, audio/<id>.wav and <split>.json (one box per clip) under `root`.

    Args:
        classes: colour names cycled over the clips (keys of COLOURS / TONES).
        prefix: file ids are f"{prefix}_{index:02d}".
        audio_key: also record "audio": "audio/<id>.wav" in each entry.
        masks: also write masks/<id>.png, the disc inscribed in the square (so mask and box differ).

    Returns:
        The list of annotation entries written.
    """
    import cv2
    import soundfile

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "frames"), exist_ok=True)
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    entries = []
    for index in range(count):
        name = classes[index % len(classes)]
        image = rng.integers(90, 140, size=(size, size, 3)).astype(np.uint8)
        side = size // 3
        x0, y0 = rng.integers(0, size - side, size=2)
        image[y0 : y0 + side, x0 : x0 + side] = COLOURS[name]
        file_id = f"{prefix}_{index:02d}"
        cv2.imwrite(os.path.join(root, "frames", f"{file_id}.jpg"), image[..., ::-1])
        t = np.arange(int(16000 * seconds)) / 16000.0
        wave = 0.5 * np.sin(2 * np.pi * TONES[name] * t) + 0.01 * rng.normal(size=t.shape)
        soundfile.write(os.path.join(root, "audio", f"{file_id}.wav"), wave.astype(np.float32), 16000, subtype="PCM_16")
        box = [x0 / size, y0 / size, (x0 + side) / size, (y0 + side) / size]
        entry = {"file": file_id, "class": name, "bbox": [box]}
        if masks:
            mask = np.zeros((size, size), np.uint8)
            cv2.circle(mask, (int(x0 + side // 2), int(y0 + side // 2)), side // 2, 255, -1)
            os.makedirs(os.path.join(root, "masks"), exist_ok=True)
            cv2.imwrite(os.path.join(root, "masks", f"{file_id}.png"), mask)
            entry["mask"] = f"masks/{file_id}.png"
        if audio_key:
            entry["audio"] = f"audio/{file_id}.wav"
        entries.append(entry)
    with open(os.path.join(root, f"{split}.json"), "w") as handle:
        json.dump(entries, handle)
    return entries


def write_quad_mp4(path, seconds=12, fps=10, size=(32, 64), gains=(1.0, 1.0, 0.0, 0.0)):
    """An mp4 with a 4-channel AAC track, as YouTube's spatial-audio 360° videos: frames of brightness 2 * index,
    and a 440 Hz tone with the ambiX gains `gains` (W, Y, Z, X; the default is a plane wave from the left)."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = size
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=24000, layout="quad")
        for index in range(fps * seconds):
            frame = av.VideoFrame.from_ndarray(np.full(size + (3,), 2 * index % 256, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        t = np.arange(seconds * 24000) / 24000
        wave = np.stack([0.5 * np.sin(2 * np.pi * 440 * t) * gain for gain in gains]).astype(np.float32)
        for start in range(0, wave.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 1024]), format="fltp",
                                               layout="quad")
            chunk.sample_rate, chunk.pts = 24000, start
            for packet in audio.encode(chunk):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return str(path)


STAMPS_CLASSES = ["cello", "frog", "zebra", "duck"]


def build_tiny_stamps(tmp_path_factory, name, **counts):
    """A 64-px stamps build of STAMPS_CLASSES (16 train, 8 val scenes plus `counts`) in a fresh temporary folder;
    fails the test with the setup command when the Debian media are missing."""
    import pytest

    from keras_avloc.data import stamps

    root = str(tmp_path_factory.mktemp(name))
    try:
        stamps.build_stamps(root, **{"n_train": 16, "n_val": 8, "n_test": 0, "n_test_mix": 0, "n_test_ext": 0,
                                     "size": 64, "seed": 5, "classes": STAMPS_CLASSES, "progress": False, **counts})
    except stamps.MediaMissingError as err:
        pytest.fail(f"stamps media missing, run `bash tools/setup.sh`: {err}")
    return root
