"""The plumbing every method stands on: one ground-truth rule whatever the model's input size, resume that
refuses other settings, exact save/load (dtype policy included), and the official LVS checkpoint from the
command line."""

import json

import cv2
import numpy as np
import pytest

from tiny_av_data import write_colour_tone_split



def numpy_ciou(heatmap, gt):
    """cIoU of the published formula: min-max normalise, top half (>= the value at index N/2), then
    sum(P*G) / (sum(G) + sum(P*[G == 0]))."""
    value = heatmap.astype(np.float32)  # float32 like the official scripts, whose heatmaps are float32
    value = (value - value.min()) / (value.max() - value.min())
    threshold = np.sort(value.ravel())[value.size // 2]
    prediction = (value >= threshold).astype(np.float64)
    return np.sum(prediction * gt) / (np.sum(gt) + np.sum(prediction * (gt == 0)))


def numpy_box_map(boxes, size=224):
    gt = np.zeros((size, size))
    for box in boxes:
        x1, y1, x2, y2 = (int(size * max(v, 0)) for v in box)
        gt[y1:y2, x1:x2] = 1
    return gt


def numpy_mask_iou(heatmap, mask):
    value = heatmap.astype(np.float32)
    value = (value - value.min()) / (value.max() - value.min())
    prediction = value >= np.sort(value.ravel())[value.size // 2]
    return np.sum(prediction & mask) / np.sum(prediction | mask)


def numpy_auc(cious):
    thresholds = [0.05 * i for i in range(21)]
    fractions = [np.mean(np.asarray(cious) >= t) for t in thresholds]
    return float(np.sum([(fractions[i] + fractions[i + 1]) / 2 * 0.05 for i in range(20)]))


class AudioSeededModel:
    """Heatmaps that depend only on the audio, never on the image size: a 7 x 7 map seeded by the clip's
    spectrogram, resized bilinearly to whatever size is asked for."""

    name = "audio_seeded"

    def __init__(self):
        self.asked_sizes = []

    def localize(self, images, audio, image_size=None):
        self.asked_sizes.append(tuple(image_size))
        maps = []
        for spectrogram in np.asarray(audio):
            seed = int(round(float(np.mean(spectrogram)) * 1e4)) % (2**31)
            small = np.random.default_rng(seed).random((7, 7)).astype(np.float32)
            maps.append(cv2.resize(small, (image_size[1], image_size[0]), interpolation=cv2.INTER_LINEAR))
        return np.stack(maps)


def test_the_same_heatmaps_score_identically_whatever_size_the_model_ran_at(tmp_path):
    from keras_avloc.evaluation import evaluate_model

    root = tmp_path / "data"
    entries = write_colour_tone_split(str(root), ("red", "blue", "green"), count=6, size=224, seconds=0.5,
                                      split="test", masks=True)
    results = {}
    for image_size in (64, 128, 224):
        model = AudioSeededModel()
        results[image_size] = evaluate_model(model, str(root), "test", "stamps", batch_size=4, baselines=False,
                                             progress=False, image_size=image_size, clip_seconds=0.5)
        assert set(model.asked_sizes) == {(224, 224)}  # maps are always asked at the ground truth's size
    assert results[64]["model"] == results[128]["model"] == results[224]["model"]

    # ... and the stamps protocol scores cIoU, AUC and pointing on the box (the square around each disc)
    from keras_avloc.data import make_dataset

    probe = AudioSeededModel()
    maps = {}
    for x, y in make_dataset(str(root), "test", image_size=64, clip_seconds=0.5, batch_size=6):
        for index, heatmap in zip(np.asarray(y["index"]), probe.localize(None, np.asarray(x["audio"]), (224, 224))):
            maps[int(index)] = heatmap
    boxes = [numpy_box_map(entry["bbox"]) for entry in entries]
    masks = [cv2.imread(str(root / entry["mask"]), cv2.IMREAD_GRAYSCALE) > 127 for entry in entries]
    reference = [numpy_ciou(maps[i], boxes[i]) for i in range(6)]
    model = results[64]["model"]
    assert results[64]["ground_truth"] == "union"
    assert model["mean_ciou"] == pytest.approx(np.mean(reference), abs=1e-9)
    assert model["auc"] == pytest.approx(numpy_auc(reference), abs=1e-9)
    peaks = [np.unravel_index(np.argmax(maps[i]), (224, 224)) for i in range(6)]
    assert model["pointing_game"] == pytest.approx(np.mean([boxes[i][peaks[i]] > 0 for i in range(6)]))
    # ... and the exact masks (discs inside the boxes) give mask IoU and the mask pointing game
    assert model["mask_pointing_game"] == pytest.approx(np.mean([masks[i][peaks[i]] for i in range(6)]))

    assert model["mask_iou"] == pytest.approx(np.mean([numpy_mask_iou(maps[i], masks[i]) for i in range(6)]), abs=1e-9)


# --------------------------------------------------------------------------- resume
TINY = dict(epochs=1, batch_size=4, image_size=32, clip_seconds=0.3, seed=0, verbose=0, run_eagerly=True,
            model_kwargs={"backbone_kwargs": {"width": 4}})


def _tiny_run(tmp_path):
    from keras_avloc.training import train

    data = tmp_path / "data"
    write_colour_tone_split(str(data), count=4, size=32, seconds=0.3)
    out = tmp_path / "run"
    train("lvs", str(data), str(out), **TINY)
    return data, out


def test_resume_refuses_a_run_made_with_other_settings_and_names_them(tmp_path, capsys):
    from keras_avloc.cli import main
    from keras_avloc.training import TrainingError, train

    data, out = _tiny_run(tmp_path)
    changes = [
        ({"method": "ezvsl"}, "method"),
        ({"image_size": 64}, "image_size"),
        ({"clip_seconds": 0.5}, "clip_seconds"),
        ({"batch_size": 2}, "batch_size"),
        ({"mixed_precision": "bf16"}, "mixed_precision"),
        ({"model_kwargs": {"backbone_kwargs": {"width": 8}}}, "model_kwargs"),
        ({"seed": 1}, "seed"),
    ]
    for change, setting in changes:
        arguments = dict(TINY, **change)
        method = arguments.pop("method", "lvs")
        with pytest.raises(TrainingError, match=rf"other settings \(.*{setting}: .* there, .* now.*--overwrite"):
            train(method, str(data), str(out), **arguments)
    # the data itself changed: one clip less in the training split
    split = json.loads((data / "train.json").read_text())
    (data / "train.json").write_text(json.dumps(split[:3]))
    with pytest.raises(TrainingError, match=r"data: '[0-9a-f]+' there"):
        train("lvs", str(data), str(out), **TINY)
    (data / "train.json").write_text(json.dumps(split))
    # only --epochs may change
    _, history = train("lvs", str(data), str(out), **dict(TINY, epochs=2))
    assert len(history.history["loss"]) == 1
    # the command line names the settings and the fix, without a traceback
    code = main(["train", "--method", "ezvsl", "--data", str(data), "--out", str(out), "--epochs", "2",
                 "--batch-size", "4", "--image-size", "32", "--clip-seconds", "0.3", "--width", "4", "--seed", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "method: 'lvs' there, 'ezvsl' now" in err and "--overwrite" in err and "--out" in err
    # --overwrite starts afresh with the new settings, leaving other files alone
    (out / "notes.txt").write_text("mine")
    model, history = train("ezvsl", str(data), str(out), overwrite=True,
                           **dict(TINY, model_kwargs={"embed_dim": 8, "backbone_kwargs": {"width": 4}}))
    state = json.loads((out / "train_state.json").read_text())
    assert type(model).__name__ == "EZVSL" and state["settings"]["method"] == "ezvsl" and state["completed_epochs"] == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_a_run_folder_without_its_state_file_is_not_resumed_blindly(tmp_path):
    from keras_avloc.training import TrainingError, train

    data, out = _tiny_run(tmp_path)
    (out / "train_state.json").unlink()
    with pytest.raises(TrainingError, match="no train_state.json"):
        train("lvs", str(data), str(out), **TINY)


# --------------------------------------------------------------------------- save / load
# Every registered method's config / .keras round trip and its bf16 loss terms: tests/test_conformance.py.


def test_resnet18_config_rebuilds_the_same_backbone_in_bf16():
    from keras_avloc.backbones import ResNet18

    backbone = ResNet18(layer4_stride=1, width=8, dtype="mixed_bfloat16", name="image_resnet18")
    rebuilt = ResNet18.from_config(backbone.get_config())
    assert rebuilt.get_config() == backbone.get_config()
    assert [layer.dtype_policy.name for layer in rebuilt.layers] == [layer.dtype_policy.name for layer in backbone.layers]
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in backbone.weights]


def test_avgn_custom_encoders_serialise(tmp_path):
    import keras

    from keras_avloc.models import build_model, load_model

    image_in = keras.Input((None, None, 3))
    image_encoder = keras.Model(image_in, keras.layers.Conv2D(16, 3, strides=4, name="conv")(image_in), name="img")
    audio_in = keras.Input((None, None, 1))
    pooled = keras.layers.GlobalMaxPooling2D()(keras.layers.Conv2D(16, 3, name="conv")(audio_in))
    audio_encoder = keras.Model(audio_in, pooled, name="aud")
    model = build_model("avgn", embed_dim=16, num_classes=2, depth=1, num_heads=2, image_encoder=image_encoder,
                        audio_encoder=audio_encoder)
    x = {"image": np.ones((1, 32, 32, 3), "float32"), "audio": np.ones((1, 33, 20, 1), "float32")}
    model(x)
    model.save(str(tmp_path / "custom.keras"))
    restored = load_model(str(tmp_path / "custom.keras"), compile=False)
    assert restored.custom_encoders and restored.image_encoder.name == "img"
    np.testing.assert_array_equal(restored.localize(x["image"], x["audio"]), model.localize(x["image"], x["audio"]))


# --------------------------------------------------------------------------- the official LVS checkpoint
def test_port_weights_writes_a_complete_lvs_model_from_the_official_layout(tmp_path, capsys, resnet_fixtures):
    """The width-8 fixture is a checkpoint in the official layout (`module.imgnet.*`,
    `module.audnet.*`, made by torch); its layer4 outputs were computed by torch. The heatmap of the ported
    model must be the cosine map computed here in numpy from those torch outputs."""
    from keras_avloc.cli import main
    from keras_avloc.models import LVS, load_model

    model_path = tmp_path / "lvs_official" / "model.keras"
    assert main(["port-weights", str(resnet_fixtures / "lvs_w8_checkpoint.npz"), str(model_path), "--method", "lvs"]) == 0
    model = load_model(str(model_path), compile=False)
    assert isinstance(model, LVS) and model.image_backbone.width == 8
    # The official test settings; the official pipeline keeps the files' levels (no level normalisation).
    assert model.eval_settings == {"image_size": 224, "clip_seconds": 10.0, "image_mode": "crop", "strict_median": True,
                                   "audio_level_db": None}

    with np.load(resnet_fixtures / "resnet18_w8_outputs.npz") as outputs:
        image_features, audio_features = outputs["image_stride1"], outputs["audio_stride1"]
        image_input, audio_input = outputs["image_input"], outputs["audio_input"]
    image_unit = image_features / np.linalg.norm(image_features, axis=-1, keepdims=True)
    audio_vector = audio_features.max(axis=(1, 2))
    audio_unit = audio_vector / np.linalg.norm(audio_vector, axis=-1, keepdims=True)
    reference = np.einsum("bhwc,bc->bhw", image_unit, audio_unit)
    features = model({"image": image_input, "audio": audio_input})
    similarity = np.asarray(model.similarity_map(features["image_maps"], features["audio_vecs"]))
    assert np.max(np.abs(similarity - reference)) < 1e-4
    # localize upsamples like the official test script (cv2.resize INTER_LINEAR to 224 x 224)
    heatmaps = model.localize(image_input, audio_input, image_size=(224, 224))
    official = np.stack([cv2.resize(m.astype(np.float32), (224, 224), interpolation=cv2.INTER_LINEAR) for m in reference])
    assert np.max(np.abs(heatmaps - official)) < 1e-3

    # evaluate and localize take the file directly and use its official settings
    data = tmp_path / "data"
    write_colour_tone_split(str(data), count=3, size=64, seconds=1.0, split="test")
    assert main(["evaluate", "--checkpoint", str(model_path), "--data", str(data), "--protocol", "vggss",
                 "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["source"]["settings"] == {"image_size": 224, "clip_seconds": 10.0, "image_mode": "crop",
                                             "strict_median": True, "audio_level_db": None,
                                             "threshold": "median"}
    assert metrics["model"]["num_evaluated"] == 3
    assert main(["localize", "--checkpoint", str(model_path), "--image", str(data / "frames" / "clip_00.jpg"),
                 "--audio", str(data / "audio" / "clip_00.wav"), "--out", str(tmp_path / "fig.png")]) == 0
    assert cv2.imread(str(tmp_path / "fig.png")).shape[0] > 100
    # a backbone-only option with --method is a clear error
    assert main(["port-weights", str(resnet_fixtures / "lvs_w8_checkpoint.npz"), str(tmp_path / "x.keras"), "--method",
                 "lvs", "--prefix", "imgnet."]) == 2
    assert "drop them" in capsys.readouterr().err


# --------------------------------------------------------------------------- one registration
def test_a_registered_method_trains_through_the_command_line_with_the_base_steps(tmp_path, capsys):
    import keras

    from keras_avloc.cli import main
    from keras_avloc.models import AVGN, AVLocModel, LVS, method_names, register_method
    from keras_avloc.models.registry import _REGISTERED

    # no method copies the fit / evaluate steps: they override the one hook
    for cls in (LVS, AVGN):
        assert "train_step" not in vars(cls) and "test_step" not in vars(cls)
    assert "compute_batch_terms" in vars(AVGN)

    @keras.saving.register_keras_serializable(package="tests")
    class HalfTemperatureLVS(LVS):
        display_name = "LVS/2"

        def __init__(self, **kwargs):
            kwargs.setdefault("temperature", 0.035)
            super().__init__(**kwargs)

    register_method("half-lvs", HalfTemperatureLVS)
    try:
        assert "halflvs" in method_names()
        data = tmp_path / "data"
        write_colour_tone_split(str(data), count=4, size=32, seconds=0.3)
        code = main(["train", "--method", "half-lvs", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs",
                     "1", "--batch-size", "4", "--image-size", "32", "--clip-seconds", "0.3", "--width", "4",
                     "--eager", "--quiet"])
        assert code == 0, capsys.readouterr().err
        state = json.loads((tmp_path / "run" / "train_state.json").read_text())
        assert state["settings"]["method"] == "halflvs"
        from keras_avloc.models import load_model

        model = load_model(str(tmp_path / "run" / "model.keras"))
        assert isinstance(model, HalfTemperatureLVS) and isinstance(model, AVLocModel) and model.temperature == 0.035
    finally:
        _REGISTERED.pop("halflvs", None)


def test_an_interrupted_stand_in_with_other_settings_is_not_resumed(tmp_path):
    from keras_avloc.training.pretrain import pretrain_image
    from keras_avloc.training.train import TrainingError

    work = tmp_path / "standin" / "w8.work"
    work.mkdir(parents=True)
    (work / "train_state.json").write_text(json.dumps({"completed_epochs": 3, "settings": {"width": 16}}))
    with pytest.raises(TrainingError, match="interrupted stand-in training with other settings"):
        pretrain_image(str(tmp_path / "standin" / "w8.weights.h5"), ["cow", "dog"], width=8, progress=False)


def test_warm_up_needs_a_known_epoch_length():
    import tensorflow as tf

    from keras_avloc.training.train import TrainingError, _steps_per_epoch

    finite = tf.data.Dataset.range(10).batch(4, drop_remainder=True)
    assert _steps_per_epoch(finite, 4, 1.0) == 2
    endless = finite.repeat()
    assert _steps_per_epoch(endless, 4, 0.0) == 1  # no warm-up: the length is not needed
    with pytest.raises(TrainingError, match="epoch length"):
        _steps_per_epoch(endless, 4, 1.0)
