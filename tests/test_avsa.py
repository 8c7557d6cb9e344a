"""AVC / AVSA: the losses against numpy references written from the paper and the official criteria, the networks'
shapes and parameter counts, the viewpoint pipeline, training (AVC then AVSA from it), saving and bf16."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from tiny_av_data import write_quad_mp4

from keras_avloc.data import sphere
from keras_avloc.data import stamps as stamps_module


def _normalise(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _cross_entropy(logits, label):
    logits = np.asarray(logits, np.float64)
    return float(np.log(np.exp(logits - logits.max()).sum()) + logits.max() - logits[label])


def reference_avc(video, audio, temperature):
    """Cross-modal InfoNCE, both directions averaged: for video i the candidates are every clip's audio."""
    v, a = _normalise(video[:, 0]), _normalise(audio[:, 0])
    batch = len(v)
    v2a = np.mean([_cross_entropy([v[i] @ a[c] / temperature for c in range(batch)], i) for i in range(batch)])
    a2v = np.mean([_cross_entropy([a[i] @ v[c] / temperature for c in range(batch)], i) for i in range(batch)])
    return 0.5 * (v2a + a2v)


def reference_avsa(pred, target, temperature):
    """Viewpoint-level contrast: viewpoint j of clip i against clip i's V targets and viewpoint j of the others."""
    p, t = _normalise(pred), _normalise(target)
    batch, views = p.shape[:2]
    losses, avc_hits, avsa_hits = [], [], []
    for i in range(batch):
        for j in range(views):
            hard = [p[i, j] @ t[i, k] / temperature for k in range(views)]
            easy = [p[i, j] @ t[c, j] / temperature for c in range(batch) if c != i]
            losses.append(_cross_entropy(hard + easy, j))
            avc_hits.append(all(hard[j] > e for e in easy))
            avsa_hits.append(all(hard[j] >= h for h in hard))
    return np.mean(losses), np.mean(avc_hits), np.mean(avsa_hits)


def test_avc_loss_matches_the_reference():
    from keras_avloc.models.avsa import avc_loss_terms

    rng = np.random.default_rng(0)
    video, audio = rng.normal(size=(6, 1, 16)), rng.normal(size=(6, 1, 16))
    terms = avc_loss_terms(video, audio, temperature=0.07)
    np.testing.assert_allclose(float(terms["loss"]), reference_avc(video, audio, 0.07), rtol=1e-4)
    matched = avc_loss_terms(video, video, temperature=0.07)  # every clip is its own best match
    assert float(matched["avc_accuracy"]) == 1.0


def test_avsa_contrast_matches_the_reference_with_hard_and_easy_negatives():
    from keras_avloc.models.avsa import avsa_contrast_terms

    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(5, 4, 12)), rng.normal(size=(5, 4, 12))
    terms = avsa_contrast_terms(pred, target, temperature=0.07)
    loss, avc_accuracy, avsa_accuracy = reference_avsa(pred, target, 0.07)
    np.testing.assert_allclose(float(terms["loss"]), loss, rtol=1e-4)
    np.testing.assert_allclose(float(terms["avc_accuracy"]), avc_accuracy, atol=1e-6)
    np.testing.assert_allclose(float(terms["avsa_accuracy"]), avsa_accuracy, atol=1e-6)
    # a prediction equal to its own target, with targets spread apart, is right against both kinds of negatives
    spread = _normalise(rng.normal(size=(5, 4, 64)))
    assert float(avsa_contrast_terms(spread, spread)["avsa_accuracy"]) == 1.0


def test_simplified_attention_matches_the_formula():
    from keras_avloc.models.avsa import SimplifiedAttention

    rng = np.random.default_rng(2)
    hidden = rng.normal(size=(2, 4, 8)).astype(np.float32)
    layer = SimplifiedAttention(8)
    out = np.asarray(layer(hidden))
    (wq, bq), (wk, bk), (wv, bv), (wd, bd) = [
        (np.asarray(dense.kernel), np.asarray(dense.bias)) for dense in (layer.query, layer.key, layer.value, layer.dense)]
    q, k, v = hidden @ wq + bq, hidden @ wk + bk, hidden @ wv + bv
    scores = q @ k.transpose(0, 2, 1) / math.sqrt(8)
    probabilities = np.exp(scores - scores.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, probabilities @ v @ wd + bd, rtol=1e-4, atol=1e-5)


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_r2plus1d_shapes_and_parameter_counts():
    from keras_avloc.models.avsa import audio_conv2d, r2plus1d_backbone

    small = r2plus1d_backbone(width=8)
    assert tuple(small(np.zeros((2, 8, 56, 56, 3), np.float32)).shape) == (2, 64)
    assert tuple(r2plus1d_backbone(width=8, block="r2plus1d")(np.zeros((1, 4, 32, 32, 3), np.float32)).shape) == (1, 64)
    # Tran et al.'s R(2+1)D-18 (torchvision r2plus1d_18: 31,505,325 parameters with its 400-class classifier)
    full = r2plus1d_backbone(width=64, block="r2plus1d")
    assert abs(_trainable(full) + 512 * 400 + 400 - 31_505_325) / 31_505_325 < 0.002
    # the official AVSA network keeps the block's output width inside: counted from its layer list
    def block(n_in, n_out, res):
        return n_in * n_out * 9 + n_out * n_out * 3 + n_out * n_out * 9 + n_out * n_out * 3 + (n_in * n_out if res else 0) \
            + 2 * n_out * 4
    expected = 3 * 64 * 3 * 49 + 2 * 64 + sum([
        block(64, 64, False), block(64, 64, False), block(64, 128, True), block(128, 128, False),
        block(128, 256, True), block(256, 256, False), block(256, 512, True), block(512, 512, False)])
    assert _trainable(r2plus1d_backbone(width=64)) == expected
    audio = audio_conv2d(width=8)
    assert tuple(audio(np.zeros((2, 101, 128, 4), np.float32)).shape) == (2, 64)



@pytest.mark.parametrize("block", ["avsa", "r2plus1d"])
def test_bf16_video_gradients_stay_right_where_time_shrinks_to_two_frames(block):
    """4 frames reach 2 after the first temporal stride, where oneDNN's bf16 filter gradient of a "same" Conv3D is
    garbage (up to 1e36) on CPUs with AVX512-BF16 but no AMX; the models pad explicitly. One temporal convolution
    over 2 frames must match float32 to bf16 accuracy, and a whole bf16 network's kernel gradients must stay
    finite and of float32's size (not equal: rounding moves an untrained net's max-pool winners)."""
    import keras
    import tensorflow as tf

    from keras_avloc.models.avsa import _conv3d, r2plus1d_backbone

    rng = np.random.default_rng(0)

    def kernel_gradients(build, inputs, policy, weights=None):
        keras.utils.set_random_seed(0)
        net = build(keras.DTypePolicy(policy))
        if weights is not None:
            net.set_weights(weights)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(tf.cast(net(inputs, training=True), "float32")))
        grads = tape.gradient(loss, net.trainable_weights)
        return net.get_weights(), {w.path: g.numpy() for w, g in zip(net.trainable_weights, grads) if "kernel" in w.path}

    def one_conv(dtype):
        inputs = keras.Input((2, 8, 8, 8))
        return keras.Model(inputs, _conv3d(inputs, 8, (3, 1, 1), (1, 1, 1), "tmp", dtype))

    frames = tf.constant(rng.normal(size=(2, 2, 8, 8, 8)).astype(np.float32))
    weights, full = kernel_gradients(one_conv, frames, "float32")
    _, half = kernel_gradients(one_conv, tf.cast(tf.cast(frames, "bfloat16"), "float32"), "mixed_bfloat16", weights)
    (path, value), = full.items()
    assert np.abs(half[path] - value).max() <= 0.02 * np.abs(value).max()

    clips = tf.constant(rng.normal(size=(2, 4, 32, 32, 3)).astype(np.float32))
    build = lambda dtype: r2plus1d_backbone(width=4, block=block, dtype=dtype)  # noqa: E731
    weights, full = kernel_gradients(build, clips, "float32")
    _, half = kernel_gradients(build, clips, "mixed_bfloat16", weights)
    assert set(full) == set(half) and len(full) > 10
    for path, value in full.items():
        assert np.isfinite(half[path]).all() and np.abs(half[path]).max() <= 10 * np.abs(value).max() + 1e-3, path

@pytest.fixture(scope="module")
def tiny_sphere(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sphere"))
    try:
        sphere.build_sphere(root, n_train=4, n_val=0, n_test=2, size=(64, 128), seed=3, reflections=False,
                            ambience=False, classes=["cow", "dog", "duck"], progress=False)
    except stamps_module.MediaMissingError as err:
        pytest.fail(f"stamps media missing, run `bash tools/setup.sh`: {err}")
    return root


def test_viewpoint_batches_have_the_official_shapes_and_fixed_evaluation_viewpoints(tiny_sphere):
    from keras_avloc.data.sphere_dataset import make_sphere_dataset

    ds = make_sphere_dataset(tiny_sphere, "test", batch_size=2, viewpoints=4, frames=8, crop_size=32, seed=5)
    (x, y), = list(ds)
    assert tuple(x["image"].shape) == (2, 4, 8, 32, 32, 3)
    assert tuple(x["audio"].shape) == (2, 4, 101, 128, 4)
    (x2, y2), = list(ds)
    np.testing.assert_array_equal(y["centres"].numpy(), y2["centres"].numpy())  # evaluation: the same viewpoints
    centres = y["centres"].numpy().reshape(-1, 2)
    assert ((centres[:, 1] >= 0.33) & (centres[:, 1] <= 0.66)).all()
    train = make_sphere_dataset(tiny_sphere, "train", training=True, batch_size=2, viewpoints=4, crop_size=32, seed=5)
    first = np.concatenate([b[1]["centres"].numpy() for b in train])
    second = np.concatenate([b[1]["centres"].numpy() for b in train])
    assert not np.allclose(np.sort(first.ravel()), np.sort(second.ravel()))  # new viewpoints every epoch
    assert train.skipped == [0]


def test_a_360_clip_without_a_wav_is_read_from_its_own_4_channel_track(tmp_path):
    from keras_avloc.data.sphere_dataset import load_clip
    from keras_avloc.spatial import intensity_vector

    os.makedirs(tmp_path / "video")
    write_quad_mp4(tmp_path / "video" / "pano.mp4", seconds=2, fps=16, size=(32, 64))
    frames, foa = load_clip(str(tmp_path), {"file": "pano"})
    assert frames.shape == (32, 32, 64, 3) and foa.shape == (4, 24000)  # 16 fps, 1 s of 24 kHz ambiX
    assert intensity_vector(foa)[1] > 0.9  # the plane wave from the left survives the AAC round trip


def test_flipped_views_hear_a_mirrored_field_and_misaligned_fields_are_turned():
    from keras_avloc.data.sphere_dataset import clip_viewpoints, mirror_foa
    from keras_avloc.spatial import foa_encode, intensity_vector

    rng = np.random.default_rng(0)
    source = rng.normal(size=2400)
    field = foa_encode(source, math.radians(40.0), 0.0)  # from 40° to the left
    assert intensity_vector(mirror_foa(field))[1] < -0.5  # now from the right
    frames = np.zeros((8, 32, 64, 3), np.uint8)
    turned = [clip_viewpoints(frames, field, np.random.default_rng(s), 1, 8, 16, misalign=1.0)["rotated"]
              for s in range(3)]
    kept = [clip_viewpoints(frames, field, np.random.default_rng(s), 1, 8, 16, misalign=0.0)["rotated"]
            for s in range(3)]
    assert all(turned) and not any(kept)


def test_the_intensity_audio_input_trains_saves_and_sweeps(tiny_sphere, tmp_path):
    import keras

    from keras_avloc.data.sphere_dataset import make_sphere_dataset
    from keras_avloc.evaluation.sphere import sweep_map
    from keras_avloc.models import load_model
    from keras_avloc.models.avsa import AVC, AVSA

    keras.utils.set_random_seed(0)
    model = AVSA(width=4, frames=4, crop_size=32, audio_input="ambix_intensity")
    model.compile(run_eagerly=True)
    dataset = make_sphere_dataset(tiny_sphere, "train", training=True, batch_size=2, frames=4, crop_size=32,
                                  audio_input="ambix_intensity")
    x, y = next(iter(dataset))
    assert tuple(x["audio"].shape) == (2, 4, 101, 128, 7)
    assert np.abs(x["audio"][..., 4:].numpy()).max() <= 1.0 + 1e-4  # intensity ratios, not normalised by mel_stats
    assert model.audio_encoder.input_shape[-1] == 7
    assert np.isfinite(model.fit(dataset, epochs=1, verbose=0).history["loss"]).all()
    model.save(tmp_path / "m.keras")
    loaded = load_model(str(tmp_path / "m.keras"))
    assert loaded.audio_input == "ambix_intensity"
    np.testing.assert_allclose(np.asarray(loaded.viewpoint_scores(x)), np.asarray(model.viewpoint_scores(x)),
                               atol=1e-5)
    frames = np.zeros((4, 64, 128, 3), np.uint8)
    field = np.random.default_rng(0).normal(size=(4, 24000)).astype(np.float32) * 0.1
    assert sweep_map(loaded, frames, field).shape == (3, 24)  # the sweep builds the same 7 channels
    with pytest.raises(ValueError, match="ambix, ambix_intensity"):
        AVSA(width=4, audio_input="stereo")
    with pytest.raises(ValueError, match="audio_input 'ambix', this model 'ambix_intensity'"):
        model.initialize_from(AVC(width=4, frames=4, crop_size=32))  # the curriculum keeps the audio input


@pytest.fixture(scope="module")
def trained(tiny_sphere, tmp_path_factory):
    """AVC trained with the command line, then AVSA from it with the Python API (1 epoch each, tiny)."""
    from keras_avloc.cli import main
    from keras_avloc.training import train

    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--method", "avc", "--data", tiny_sphere, "--out", str(out / "avc"), "--epochs", "1",
                 "--batch-size", "2", "--width", "4", "--image-size", "32", "--model-options", '{"frames": 4}',
                 "--seed", "0", "--eager", "--quiet"]) == 0
    avsa, history = train("avsa", tiny_sphere, str(out / "avsa"), epochs=1, batch_size=2, image_size=32, seed=0,
                          verbose=0, run_eagerly=True, init_from=str(out / "avc" / "model.keras"))
    return {"root": tiny_sphere, "out": out, "avsa": avsa, "history": history.history}


def test_avc_then_avsa_train_save_load_and_run_in_bf16(trained, tmp_path):
    import keras

    from keras_avloc.models import load_model
    from keras_avloc.models.avsa import AVSA
    from keras_avloc.training import train

    avc = load_model(str(trained["out"] / "avc" / "model.keras"))
    assert avc.width == 4 and avc.crop_size == 32
    assert len(avc.mel_stats["mean"]) == 128 and float(np.mean(avc.mel_stats["std"])) > 1.0  # from the data
    avsa, history = trained["avsa"], trained["history"]
    assert avsa.width == 4 and avsa.frames == 4 and avsa.mel_stats == avc.mel_stats  # inherited from AVC
    assert set(history) >= {"loss", "avsa_accuracy", "audio_to_video", "video_to_audio"}
    assert np.isfinite(history["loss"]).all()
    with pytest.raises(Exception, match="init-from"):
        train("avsa", trained["root"], str(tmp_path / "nope"), epochs=1, batch_size=2)
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(2, 4, 4, 32, 32, 3)).astype(np.float32),
         "audio": rng.normal(size=(2, 4, 101, 128, 4)).astype(np.float32) * 10}
    loaded = load_model(str(trained["out"] / "avsa" / "model.keras"))
    np.testing.assert_allclose(np.asarray(loaded.viewpoint_scores(x)), np.asarray(avsa.viewpoint_scores(x)), atol=1e-5)
    half = AVSA.from_config({**avsa.get_config(), "dtype": "mixed_bfloat16"})
    assert half.dtype_policy.name == "mixed_bfloat16"
    assert np.isfinite(np.asarray(half.viewpoint_scores(x))).all()
    with pytest.raises(NotImplementedError, match="sweep_map"):
        avsa.localize(x["image"], x["audio"])
    assert keras.saving.get_registered_object("keras_avloc>AVSA") is AVSA


@pytest.mark.long
def test_the_360_demo_trains_avc_then_avsa_and_reports_them_beside_the_baselines(tmp_path, capsys):
    from keras_avloc.cli import main

    out, data = tmp_path / "demo", tmp_path / "sphere"
    # AVSA alone: the demo trains AVC first (the curriculum), with the methods' demo recipes
    assert main(["demo", "--methods", "avsa", "--preset", "tiny", "--out", str(out), "--data", str(data)]) == 0
    report = (out / "report.md").read_text()
    for row in ("| AVSA |", "| AVC |", "| objectness (AVSA's video features only) |", "| SRP (2° grid) |",
                "| front prior |", "| random |", "| intensity vector |"):
        assert row in report, row
    state = json.loads((out / "avsa" / "train_state.json").read_text())
    assert state["details"]["init_from_path"] == str(out / "avc" / "model.keras")
    assert state["settings"]["model_kwargs"]["audio_input"] == "ambix_intensity"
    assert state["settings"]["model_kwargs"]["crop_method"] == "objects" and state["settings"]["learning_rate"] == 1e-3
    results = json.loads((out / "results.json").read_text())
    assert set(results["results"]) == {"AVC", "AVSA"} and results["results"]["AVSA"]["rows"]["AVSA"]["clips"] == 2
    # a re-run trains nothing again
    capsys.readouterr()
    assert main(["demo", "--methods", "avc,avsa", "--preset", "tiny", "--out", str(out), "--data", str(data)]) == 0
    assert capsys.readouterr().out.count("nothing to do") == 2
    assert main(["demo", "--methods", "avsa", "--preset", "full", "--out", str(out), "--data", str(data)]) == 2
    assert "--preset default or tiny" in capsys.readouterr().err
    # the two demos never build into each other's data folder
    stamps_build = tmp_path / "stamps"
    (stamps_build / ".parts").mkdir(parents=True)
    (stamps_build / ".parts" / "params.json").write_text("{}")
    assert main(["demo", "--methods", "avc", "--preset", "tiny", "--out", str(out), "--data", str(stamps_build)]) != 0
    assert "holds a stamps build" in capsys.readouterr().err
    assert main(["demo", "--methods", "lvs", "--preset", "tiny", "--out", str(tmp_path / "frames"), "--data",
                 str(data)]) != 0
    assert "holds a 360° build" in capsys.readouterr().err


def test_angular_error_and_the_panorama_interpolation():
    from keras_avloc.evaluation.sphere import angular_error, grid_to_panorama

    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1.5, 1.5, size=(50, 2)), rng.uniform(-1.5, 1.5, size=(50, 2))
    # haversine, written separately
    haversine = 2 * np.arcsin(np.sqrt(np.sin((b[:, 1] - a[:, 1]) / 2) ** 2 + np.cos(a[:, 1]) * np.cos(b[:, 1])
                                      * np.sin((b[:, 0] - a[:, 0]) / 2) ** 2))
    np.testing.assert_allclose(angular_error(a, b), np.degrees(haversine), atol=1e-6)
    grid = np.zeros((3, 8))
    grid[1, 5] = 1.0  # longitude 5/8 of latitude 0.5
    panorama = grid_to_panorama(grid, (40, 80), latitudes=(0.25, 0.5, 0.75))
    assert np.unravel_index(np.argmax(panorama), panorama.shape) in {(19, 49), (20, 49), (19, 50), (20, 50)}
    assert panorama[:10].max() == 0 and np.allclose(panorama[20, :30], 0)
    grid = np.zeros((3, 8))
    grid[1, 0] = 1.0  # the first longitude: the panorama's last columns interpolate towards it across the seam
    panorama = grid_to_panorama(grid, (40, 80), latitudes=(0.25, 0.5, 0.75))
    assert panorama[20, 79] > 0.9 and panorama[20, 0] > 0.9 and np.allclose(panorama[20, 20:60], 0)


def test_sphere_protocol_scores_the_model_and_the_signal_processing_baselines(trained, capsys):
    from keras_avloc.cli import main

    out = trained["out"] / "eval"
    assert main(["evaluate", "--checkpoint", str(trained["out"] / "avsa" / "model.keras"), "--data", trained["root"],
                 "--protocol", "sphere", "--probes", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| AVSA |" in printed and "| SRP (2° grid) |" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["rows"]
    assert set(rows) >= {"AVSA", "SRP (2° grid)", "SRP (sweep grid)", "intensity vector", "front prior", "random",
                         "objectness (video only)"}
    assert rows["SRP (2° grid)"]["doa_median"] < 10.0  # dry scenes: the classical estimate is right
    assert all(0.0 <= row.get("ciou", 0.0) <= 1.0 for row in rows.values())
    assert len(list(out.glob("sphere_*.png"))) == 2
    probes = metrics["probes"]
    assert 0.0 <= probes["avc_bin"] <= 1.0 and 0.0 <= probes["avsa_bin"] <= 1.0 and probes["train_clips"] == 4


def test_probes_learn_separable_features_and_pair_other_clips():
    from keras_avloc.evaluation.sphere import _avc_pairs, probe_accuracy, train_probe

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    video = rng.normal(size=(200, 4, 8)).astype(np.float32)
    audio = rng.normal(size=(200, 4, 8)).astype(np.float32) + 3.0 * labels[:, None, None]
    probe = train_probe(video, audio, labels, epochs=20, learning_rate=1e-3)
    assert probe_accuracy(probe, video, audio, labels) > 0.95
    v, a, y = _avc_pairs(video, audio, np.random.default_rng(1))
    assert y.tolist() == [0] * 200 + [1] * 200
    assert not any(np.array_equal(a[200 + i], audio[i]) for i in range(200))  # a negative is another clip's audio


def test_localize_draws_where_a_360_clip_sounds(trained, tmp_path, capsys):
    from keras_avloc.cli import main

    record = json.loads((Path(trained["root"]) / "test.json").read_text())[0]
    video = os.path.join(trained["root"], "video", record["file"] + ".mp4")
    audio = os.path.join(trained["root"], "audio", record["file"] + ".wav")
    checkpoint = str(trained["out"] / "avsa" / "model.keras")
    assert main(["localize", "--checkpoint", checkpoint, "--video", video, "--audio", audio,
                 "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["localize", "--checkpoint", checkpoint, "--video", video, "--audio", audio,
                 "--out", str(tmp_path / "p.mp4"), "--heatmap-fps", "2"]) == 0
    from keras_avloc.io.media import read_frames

    frames, _ = read_frames(str(tmp_path / "p.mp4"))
    assert frames.shape[1:3] == (64, 128)
    # the synthetic clips keep their ambiX apart from the (silent) mp4: without --audio, a clear error
    assert main(["localize", "--checkpoint", checkpoint, "--video", video, "--out", str(tmp_path / "q.png")]) == 2
    assert "pass --audio" in capsys.readouterr().err


def test_a_2d_resnet_inflates_into_the_video_network(tmp_path):
    """I3D-style inflation of the image stand-in: on a clip of one repeated frame the inflated stem computes the 2D
    stem on every frame; the spatial kernels are the 2D ones, the temporal ones the identity; `avloc train
    --init-image-weights` inflates (`load_image_weights`); a width or block mismatch is refused."""
    import keras
    from keras_avloc.backbones import ResNet18
    from keras_avloc.models.avsa import r2plus1d_backbone
    from keras_avloc.models.avsa_inflate import inflate_resnet18
    from keras_avloc.training.train import build_training_model

    rng = np.random.default_rng(0)
    image = ResNet18(width=4, input_shape=(None, None, 3))
    for layer in image.layers:
        if hasattr(layer, "moving_variance"):
            size = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, size), rng.normal(0, 0.2, size), rng.normal(0, 0.1, size),
                               rng.uniform(0.5, 1.5, size)])
    video = r2plus1d_backbone(4, "avsa")
    inflate_resnet18(video, image)
    frame = rng.normal(size=(1, 32, 32, 3)).astype(np.float32)
    clip = np.repeat(frame[:, None], 4, axis=1)
    expected = np.asarray(keras.Model(image.input, image.get_layer("bn1").output)(frame))[:, None]
    stem = np.asarray(keras.Model(video.input, video.get_layer("stem_bn").output)(clip))
    np.testing.assert_allclose(stem, np.repeat(expected, 4, axis=1), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(video.get_layer("conv4x_1_spt_conv2").kernel)[0],
                                  np.asarray(image.get_layer("layer3_1_conv2").kernel))
    temporal = np.asarray(video.get_layer("conv2x_0_tmp_conv1").kernel)
    np.testing.assert_array_equal(temporal[1, 0, 0], np.eye(4))
    np.testing.assert_array_equal(temporal[0], 0)

    path = tmp_path / "standin.weights.h5"
    image.save_weights(path)
    model = build_training_model("avc", init_image_weights=str(path), model_kwargs={"width": 4})
    np.testing.assert_array_equal(np.asarray(model.video_encoder.get_layer("stem_conv").kernel)[1],
                                  np.asarray(image.get_layer("conv1").kernel))
    with pytest.raises(ValueError, match="width"):
        inflate_resnet18(r2plus1d_backbone(8, "avsa"), image)
    with pytest.raises(ValueError, match="avsa"):
        inflate_resnet18(r2plus1d_backbone(4, "r2plus1d"), image)
