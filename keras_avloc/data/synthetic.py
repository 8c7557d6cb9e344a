"""Tiny synthetic datasets in the keras-avloc layout, for tests and benchmarks (noise audio, flat-colour images
with a bright box where the "source" is)."""

import json
import os

import numpy as np


def write_synthetic_dataset(root, count=8, split="test", image_hw=(96, 128), seconds=4.0, sample_rate=16000,
                            classes=("tone", "noise"), with_masks=False, with_video=False, with_frames=True,
                            seed=0):
    """Writes `count` clips to `root` (frames/*.jpg, audio/*.wav, optional masks/*.png and video/*.mp4) and
    `root/<split>.json`.

    Args:
        root: output folder (created).
        count: number of clips.
        split: split name of the json written.
        image_hw: frame height and width.
        seconds: audio length.
        sample_rate: audio rate of the wav files.
        classes: class names, assigned round-robin.
        with_masks: also write a mask per clip, equal to its box.
        with_video: also write video/<file>.mp4 (a few frames + the audio track) through `media.write_video`.
        with_frames: write frames/ and audio/ (False with `with_video` gives an mp4-only dataset).
        seed: random seed.

    Returns:
        the list of json entries written.
    """
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(seed)
    height, width = image_hw
    for folder in ("frames", "audio", "masks", "video"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    entries = []
    for position in range(count):
        file_id = f"clip_{position:04d}"
        x1, y1 = rng.uniform(0.05, 0.45, size=2)
        x2, y2 = x1 + rng.uniform(0.2, 0.5), y1 + rng.uniform(0.2, 0.5)
        box = [float(x1), float(y1), float(min(x2, 1.0)), float(min(y2, 1.0))]
        image = np.full([height, width, 3], rng.integers(0, 120, size=3), np.uint8)
        left, top, right, bottom = (np.array(box) * [width, height, width, height]).astype(int)
        image[top:bottom, left:right] = 230
        samples = int(seconds * sample_rate)
        time = np.arange(samples) / sample_rate
        wave = 0.3 * np.sin(2 * np.pi * (220 + 40 * position) * time) + 0.05 * rng.standard_normal(samples)
        entry = {"file": file_id, "class": classes[position % len(classes)], "bbox": [box]}
        if with_frames:
            Image.fromarray(image).save(os.path.join(root, "frames", f"{file_id}.jpg"), quality=92)
            soundfile.write(os.path.join(root, "audio", f"{file_id}.wav"), wave.astype(np.float32), sample_rate,
                            subtype="PCM_16")
        if with_masks:
            mask = np.zeros([height, width], np.uint8)
            mask[top:bottom, left:right] = 255
            Image.fromarray(mask).save(os.path.join(root, "masks", f"{file_id}.png"))
            entry["mask"] = f"masks/{file_id}.png"
        if with_video:
            from keras_avloc.io import media

            frames = np.repeat(image[None], 5, axis=0)
            media.write_video(os.path.join(root, "video", f"{file_id}.mp4"), frames, fps=2,
                              audio=wave.astype(np.float32), sample_rate=sample_rate)
        entries.append(entry)
    with open(os.path.join(root, f"{split}.json"), "w", encoding="utf-8") as handle:
        json.dump(entries, handle)
    return entries
