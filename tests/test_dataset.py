"""The tf.data pipeline: shapes, published pre-processing, augmentation, mixtures, mp4 input and bad files."""

import json
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import scipy.signal
import soundfile
from PIL import Image

from keras_avloc.data import make_dataset
from keras_avloc.data.synthetic import write_synthetic_dataset
from shared_data import shared_path

SIZE = 64
MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    write_synthetic_dataset(str(root), count=5, seconds=2.0, image_hw=(48, 80), with_masks=False)
    return root


def _batches(dataset):
    xs, ys = zip(*[(x, y) for x, y in dataset])
    return ({k: np.concatenate([x[k].numpy() for x in xs]) for k in xs[0]},
            {k: np.concatenate([y[k].numpy() for y in ys]) for k in ys[0]})


def _reference_spectrogram(path, clip_seconds):
    wave, rate = soundfile.read(path, dtype="float32")
    length = int(rate * clip_seconds)
    start = int(max(len(wave) / rate / 2 - clip_seconds / 2, 0) * rate)
    clip = wave[start:start + length]
    if len(clip) < length:
        clip = np.tile(clip, length // len(clip) + 1)[:length]
    _, _, spec = scipy.signal.spectrogram(clip.astype(np.float64), 16000, nperseg=512, noverlap=274)
    return np.log(spec + 1e-7) / 12.0


def test_test_split_matches_published_preprocessing(dataset_root):
    dataset = make_dataset(str(dataset_root), "test", image_size=SIZE, clip_seconds=1.0, batch_size=2)
    x, y = _batches(dataset)
    assert x["image"].shape == (5, SIZE, SIZE, 3) and x["image"].dtype == np.float32
    assert x["audio"].shape == (5, 257, 66, 1)
    assert y["gt_map"].shape == (5, SIZE, SIZE) and y["label"].dtype == np.int32
    np.testing.assert_array_equal(y["index"], np.arange(5))
    np.testing.assert_array_equal(y["label"], [1, 0, 1, 0, 1])  # classes sorted: noise=0, tone=1
    entries = json.loads((dataset_root / "test.json").read_text())
    for position, entry in enumerate(entries):
        # EZ-VSL test transform: Resize((S, S), BICUBIC), ToTensor, Normalize(mean, std).
        pil = Image.open(dataset_root / "frames" / f"{entry['file']}.jpg").convert("RGB")
        expected = (np.asarray(pil.resize((SIZE, SIZE), Image.BICUBIC)) / 255.0 - MEAN) / STD
        np.testing.assert_allclose(x["image"][position], expected, atol=1e-5)
        reference = _reference_spectrogram(str(dataset_root / "audio" / f"{entry['file']}.wav"), 1.0)
        np.testing.assert_allclose(x["audio"][position, :, :, 0], reference, atol=1e-4)
        x1, y1, x2, y2 = (np.clip(entry["bbox"][0], 0, 1) * SIZE).astype(int)
        gt = np.zeros([SIZE, SIZE])
        gt[y1:y2, x1:x2] = 1
        np.testing.assert_array_equal(y["gt_map"][position], gt)


def test_input_settings_object_and_single_fields_give_the_same_batches(dataset_root):
    from keras_avloc.data import InputSettings

    inputs = InputSettings(image_size=SIZE, clip_seconds=1.0, image_mode="crop")
    grouped, _ = _batches(make_dataset(str(dataset_root), "test", inputs=inputs, batch_size=2))
    loose, _ = _batches(make_dataset(str(dataset_root), "test", image_size=SIZE, clip_seconds=1.0, image_mode="crop",
                                     batch_size=2))
    for key in loose:
        np.testing.assert_array_equal(grouped[key], loose[key])
    # A single field overrides the object; a front-end name stands for InputSettings(frontend=name).
    dataset = make_dataset(str(dataset_root), "test", inputs=inputs, clip_seconds=0.5, batch_size=2)
    assert dataset.inputs == inputs.replace(clip_seconds=0.5)
    assert next(iter(dataset))[0]["audio"].shape[2] == (8000 - 512) // 238 + 1  # 0.5 s at 16 kHz, hop 238
    assert make_dataset(str(dataset_root), "test", "csol", image_size=SIZE, batch_size=2).inputs.frontend == "csol"
    with pytest.raises(TypeError, match="image_sise.*image_size"):
        make_dataset(str(dataset_root), "test", image_sise=SIZE)
    with pytest.raises(ValueError, match="image_mode must be 'squash' or 'crop'"):
        InputSettings(image_mode="stretch")

    class Trained:  # what evaluation reads from a trained model
        frontend = "csol"
        eval_settings = {"image_size": 96, "clip_seconds": 2.0, "image_mode": "crop", "audio_level_db": -20.0}

    assert InputSettings.for_model(Trained) == InputSettings("csol", 96, 2.0, "crop", audio_level_db=-20.0)
    assert InputSettings.for_model(Trained, image_size=64).image_size == 64


def test_cv2_image_backend_is_close_to_the_pil_reference(dataset_root):
    kwargs = dict(image_size=SIZE, clip_seconds=1.0, batch_size=5)
    x_pil, y_pil = _batches(make_dataset(str(dataset_root), "test", **kwargs))
    x_cv2, y_cv2 = _batches(make_dataset(str(dataset_root), "test", image_backend="cv2", **kwargs))
    assert np.abs(x_cv2["image"] - x_pil["image"]).mean() < 0.05  # normalised units (~1/4 grey level)
    np.testing.assert_array_equal(y_cv2["gt_map"], y_pil["gt_map"])
    np.testing.assert_array_equal(x_cv2["audio"], x_pil["audio"])


def test_crop_mode_short_audio_stereo_and_44k(tmp_path):
    write_synthetic_dataset(str(tmp_path), count=2, seconds=0.5, image_hw=(40, 80))
    rate = 44100
    time = np.arange(int(rate * 2.0)) / rate
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * time), 0.1 * np.sin(2 * np.pi * 1000 * time)], axis=1)
    soundfile.write(str(tmp_path / "audio" / "clip_0001.wav"), stereo, rate, subtype="PCM_16")
    x, y = _batches(make_dataset(str(tmp_path), "test", image_size=SIZE, clip_seconds=1.0, image_mode="crop"))
    # clip_0000 is 0.5 s long: tiled to 1 s, so both halves give the same spectrum frames.
    reference = _reference_spectrogram(str(tmp_path / "audio" / "clip_0000.wav"), 1.0)
    np.testing.assert_allclose(x["audio"][0, :, :, 0], reference, atol=1e-4)
    # The stereo 44.1 kHz clip is downmixed and resampled: its energy peaks at 440 Hz (bin 14 of 257).
    peak = x["audio"][1, :, :, 0].mean(axis=1).argmax()
    assert abs(peak * 16000 / 512 - 440) < 32
    # Crop mode on an 80x40 frame: short side to 64 -> 128x64, centre crop keeps columns 32..96.
    entry = json.loads((tmp_path / "test.json").read_text())[0]
    pil = Image.open(tmp_path / "frames" / "clip_0000.jpg").convert("RGB").resize((128, 64), Image.BICUBIC)
    expected = (np.asarray(pil)[:, 32:96] / 255.0 - MEAN) / STD
    np.testing.assert_allclose(x["image"][0], expected, atol=1e-5)
    x1, y1, x2, y2 = entry["bbox"][0]
    gt = np.zeros([SIZE, SIZE])
    cols = np.clip((np.array([x1, x2]) * 128 - 32) / SIZE, 0, 1) * SIZE
    gt[int(y1 * SIZE):int(y2 * SIZE), int(cols[0]):int(cols[1])] = 1
    np.testing.assert_array_equal(y["gt_map"][0], gt)


@pytest.mark.parametrize("train_crop", ["random", "resized"])
def test_training_flips_and_crops_image_and_gt_map_together(tmp_path, train_crop):
    write_synthetic_dataset(str(tmp_path), count=6, seconds=1.0, image_hw=(64, 64), with_masks=True, split="train")
    dataset = make_dataset(str(tmp_path), "train", image_size=SIZE, clip_seconds=1.0, training=True,
                           batch_size=3, seed=3, train_crop=train_crop)
    epochs = [_batches(dataset) for _ in range(2)]
    orders = [epoch[1]["index"].tolist() for epoch in epochs]
    assert sorted(orders[0]) == list(range(6)) and orders[0] != orders[1]  # reshuffled every epoch
    images = np.concatenate([e[0]["image"] for e in epochs])
    gt_maps = np.concatenate([e[1]["gt_map"] for e in epochs])
    masks = np.concatenate([[np.asarray(Image.open(tmp_path / "masks" / f"clip_{i:04d}.png")) > 127
                             for i in e[1]["index"]] for e in epochs])
    flipped = 0
    for image, gt_map, mask in zip(images, gt_maps, masks):
        bright = (image * STD + MEAN).mean(axis=-1) > 0.8  # the box is painted white in the frame
        assert gt_map.shape == (SIZE, SIZE) and set(np.unique(gt_map)) <= {0.0, 1.0}
        assert (bright == (gt_map > 0)).mean() > 0.9  # the mask follows the image's crop and flip
        flipped += int((bright[:, ::-1] == mask[:SIZE, :SIZE]).mean() > (bright == mask[:SIZE, :SIZE]).mean())
    if train_crop == "random":  # mild crops: the flip is visible against the source mask
        assert 0 < flipped < len(images)


def test_mixtures_carry_both_labels_and_maps(dataset_root):
    kwargs = dict(image_size=SIZE, clip_seconds=1.0, batch_size=5, mix_sources=2)
    x, y = _batches(make_dataset(str(dataset_root), "test", **kwargs))
    x2, y2 = _batches(make_dataset(str(dataset_root), "test", **kwargs))
    assert y["labels"].shape == (5, 2) and y["gt_maps"].shape == (5, 2, SIZE, SIZE)
    assert (y["labels"][:, 0] != y["labels"][:, 1]).all()
    np.testing.assert_array_equal(y["labels"][:, 0], y["label"])
    np.testing.assert_array_equal(y["gt_maps"][:, 0], y["gt_map"])
    np.testing.assert_array_equal(x["audio"], x2["audio"])  # deterministic partners when not training
    single, _ = _batches(make_dataset(str(dataset_root), "test", image_size=SIZE, clip_seconds=1.0))
    assert np.abs(x["audio"] - single["audio"]).max() > 0.1


def test_mp4_only_dataset_reads_frames_and_audio_through_pyav(tmp_path):
    write_synthetic_dataset(str(tmp_path / "both"), count=2, seconds=1.5, image_hw=(64, 64), with_video=True)
    os.makedirs(tmp_path / "mp4")
    os.replace(tmp_path / "both" / "video", tmp_path / "mp4" / "video")
    os.replace(tmp_path / "both" / "test.json", tmp_path / "mp4" / "test.json")
    xv, yv = _batches(make_dataset(str(tmp_path / "mp4"), "test", image_size=SIZE, clip_seconds=1.0))
    xw, yw = _batches(make_dataset(str(tmp_path / "both"), "test", image_size=SIZE, clip_seconds=1.0,
                                   records=json_records(tmp_path / "both", tmp_path / "mp4" / "test.json")))
    assert xv["audio"].shape == xw["audio"].shape == (2, 257, 66, 1)
    np.testing.assert_array_equal(yv["gt_map"], yw["gt_map"])
    assert np.abs(xv["image"] - xw["image"]).mean() < 0.15  # H.264 and JPEG losses only
    tone_bins = xw["audio"].mean(axis=2).argmax(axis=1)
    np.testing.assert_array_equal(xv["audio"].mean(axis=2).argmax(axis=1), tone_bins)  # AAC keeps the tone


def json_records(root, split_json):
    from keras_avloc.data import load_split

    os.replace(split_json, root / "test.json")
    return load_split(str(root), "test")


def _bad_dataset(tmp_path):
    from keras_avloc.io import media

    write_synthetic_dataset(str(tmp_path), count=7, seconds=1.0, image_hw=(32, 32))
    audio, frames = tmp_path / "audio", tmp_path / "frames"
    data = (audio / "clip_0001.wav").read_bytes()
    (audio / "clip_0001.wav").write_bytes(data[: len(data) // 2])  # truncated wav
    (audio / "clip_0002.wav").write_bytes(b"")  # empty wav
    (frames / "clip_0003.jpg").write_bytes((frames / "clip_0003.jpg").read_bytes()[:200])  # truncated jpg
    os.remove(frames / "clip_0004.jpg")  # missing frame
    os.remove(audio / "clip_0005.wav")  # mp4 without an audio stream in place of the wav
    os.remove(frames / "clip_0005.jpg")
    media.write_video(str(tmp_path / "video" / "clip_0005.mp4"), np.zeros([3, 32, 32, 3], np.uint8), fps=2)
    return {1: "truncated", 2: "empty", 3: "truncated", 4: "does not exist", 5: "no audio stream"}


def test_bad_files_raise_naming_the_file_or_are_skipped_and_counted(tmp_path):
    import tensorflow as tf

    problems = _bad_dataset(tmp_path)
    entries = json.loads((tmp_path / "test.json").read_text())
    from keras_avloc.data import load_split

    records = load_split(str(tmp_path), "test")
    for position, words in problems.items():
        with pytest.raises(tf.errors.OpError) as info:
            list(make_dataset(str(tmp_path), "test", image_size=SIZE, clip_seconds=1.0,
                              records=[records[position]]))
        assert entries[position]["file"] in str(info.value) and words in str(info.value)
    with pytest.raises(tf.errors.OpError, match="clip_0003.jpg: truncated JPEG"):
        list(make_dataset(str(tmp_path), "test", image_size=SIZE, clip_seconds=1.0, records=[records[3]],
                          image_backend="cv2"))
    dataset = make_dataset(str(tmp_path), "test", image_size=SIZE, clip_seconds=1.0, on_error="skip",
                           batch_size=2, repeat=True, training=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        indices = [y["index"].numpy() for _, y in dataset.take(3)]  # three passes of the 2 good clips
    assert sorted(np.concatenate(indices).tolist()) == [0, 0, 0, 6, 6, 6]
    assert dataset.skipped.count >= 10  # passes 1 and 2 are complete: 5 each (pass 3 may be under way)
    assert set(dataset.skipped.reasons) == {entries[p]["file"] for p in problems}
    assert any("skipped 5 bad sample(s)" in str(w.message) for w in caught)


def test_model_fit_survives_bad_files_under_skip(tmp_path):
    import keras

    from keras_avloc.data import SkipReport

    _bad_dataset(tmp_path)
    dataset = make_dataset(str(tmp_path), "test", image_size=32, clip_seconds=1.0, on_error="skip", batch_size=2,
                           training=True, seed=0)
    image = keras.Input([32, 32, 3], name="image")
    audio = keras.Input([257, 66, 1], name="audio")
    pooled = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(image),
                                        keras.layers.GlobalAveragePooling2D()(audio)])
    model = keras.Model({"image": image, "audio": audio}, keras.layers.Dense(1)(pooled))
    model.compile(optimizer="sgd", loss=lambda y_true, y_pred: keras.ops.mean(y_pred**2))
    features = dataset.map(lambda x, y: (x, y["gt_map"][:, :1, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = model.fit(features, epochs=2, verbose=0, shuffle=False, callbacks=[SkipReport(dataset.skipped)])
    assert len(history.history["loss"]) == 2
    assert history.history["skipped"][-1] >= 10



def test_real_demo_clip_mp4_matches_its_wav_and_png():
    clips = shared_path("clips", "demo1_orig.mp4").parent
    base = {"file": "demo1", "class": "", "boxes": np.zeros([0, 4], np.float32), "mask": None}
    from_wav = dict(base, image=str(clips / "demo1_orig.png"), audio=str(clips / "demo1_orig.wav"), video=None)
    from_mp4 = dict(base, image=None, audio=None, video=str(clips / "demo1_orig.mp4"))
    x, _ = _batches(make_dataset(None, records=[from_wav, from_mp4], image_size=SIZE, class_list=[]))
    assert x["audio"].shape == (2, 257, 200, 1)
    correlation = np.corrcoef(x["audio"][0].ravel(), x["audio"][1].ravel())[0, 1]
    assert correlation > 0.9, correlation
    assert np.abs(x["image"][0] - x["image"][1]).mean() < 0.2


def test_annotated_mixture_uses_its_own_audio_and_per_source_maps(tmp_path):
    write_synthetic_dataset(str(tmp_path), count=2, seconds=1.0, image_hw=(64, 64))
    mixture = {"file": "clip_0000", "class": "tone", "bbox": [[0, 0, 0.5, 1], [0.5, 0, 1, 0.5]], "kind": "mixture",
               "sources": [{"class": "tone", "bbox": [[0, 0, 0.5, 1]]}, {"class": "noise", "bbox": [[0.5, 0, 1, 0.5]]}]}
    (tmp_path / "test_mix.json").write_text(json.dumps([mixture]))
    kwargs = dict(image_size=SIZE, clip_seconds=1.0)
    x_mix, y_mix = _batches(make_dataset(str(tmp_path), "test_mix", mix_sources=2, **kwargs))
    x_one, y_one = _batches(make_dataset(str(tmp_path), "test_mix", **kwargs))
    np.testing.assert_array_equal(x_mix["audio"], x_one["audio"])  # the clip's audio already is the mixture
    np.testing.assert_array_equal(y_mix["labels"], [[1, 0]])
    first, second = np.zeros([SIZE, SIZE]), np.zeros([SIZE, SIZE])
    first[:, :32] = 1
    second[:32, 32:] = 1
    np.testing.assert_array_equal(y_mix["gt_maps"][0], np.stack([first, second]))
    np.testing.assert_array_equal(y_one["gt_map"][0], np.maximum(first, second))
