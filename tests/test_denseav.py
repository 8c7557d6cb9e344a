"""DenseAV: the similarity volume, the "misa" aggregation, the calibrated NCE and every regulariser against
numpy references written from the formulas of the paper and the official `train.py` (loops and explicit
sums, not keras_avloc's code), the in-graph splice / silence / mixup augmentation, the two-phase schedule,
and a fit / save / load / localize / evaluate run on the real-media stamps build.
"""

import itertools
import math

import numpy as np
import pytest

from keras_avloc.models import denseav

RNG = np.random.default_rng(5)


def _volume_reference(audio, image, heads):
    """s[a, v, k, h, w, t] = sum over head k's channel group of A[a, t, c] V[v, h, w, c], by loops."""
    a_n, t_n, d = audio.shape
    v_n, h_n, w_n, _ = image.shape
    group = d // heads
    out = np.zeros((a_n, v_n, heads, h_n, w_n, t_n))
    for a, v, k, y, x, t in itertools.product(range(a_n), range(v_n), range(heads), range(h_n), range(w_n), range(t_n)):
        channels = slice(k * group, (k + 1) * group)
        out[a, v, k, y, x, t] = np.dot(audio[a, t, channels], image[v, y, x, channels])
    return out


def _misa_reference(volume, mask):
    a_n, v_n = volume.shape[:2]
    out = np.zeros((a_n, v_n))
    for a in range(a_n):
        for v in range(v_n):
            per_time = volume[a, v].max(axis=0).max(axis=(0, 1))  # heads, then space -> [t]
            on = mask[a] > 0
            out[a, v] = per_time[on].sum() / max(on.sum(), 0.001)
    return out


def _log_softmax(x, axis):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_volume_and_misa_aggregation_match_loops_with_masked_time():
    audio = RNG.normal(size=(3, 4, 6)).astype("float32")
    image = RNG.normal(size=(2, 3, 2, 6)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]], "float32")
    volume = np.asarray(denseav.similarity_volume(audio, image, 2))
    reference = _volume_reference(audio.astype(np.float64), image.astype(np.float64), 2)
    np.testing.assert_allclose(volume, reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(denseav.misa_aggregate(volume, mask)), _misa_reference(reference, mask),
                               rtol=1e-5, atol=1e-5)
    # the time mean is over the unmasked steps only: changing a masked step changes nothing
    audio_changed = audio.copy()
    audio_changed[0, 3] += 100.0
    volume_changed = np.asarray(denseav.similarity_volume(audio_changed, image, 2))
    np.testing.assert_allclose(np.asarray(denseav.misa_aggregate(volume_changed, mask))[0],
                               np.asarray(denseav.misa_aggregate(volume, mask))[0], rtol=1e-6)
    paired = np.asarray(denseav.paired_similarity(audio[:2], image, 2, mask[:2]))
    for b in range(2):
        np.testing.assert_allclose(paired[b], reference[b, b] * mask[b][None, None, None, :], rtol=1e-5, atol=1e-5)


def test_calibration_is_clamped_and_centred():
    sims = RNG.normal(size=(4, 4)).astype("float32")
    for theta, weight in ((0.0, 1.0), (math.log(3.0), 3.0), (10.0, 100.0), (-10.0, 0.01)):
        assert float(denseav.calibration_weight(theta)) == pytest.approx(weight, rel=1e-5)
        calibrated = np.asarray(denseav.calibrate(sims, theta))
        np.testing.assert_allclose(calibrated, weight * sims - np.mean(weight * sims), rtol=1e-5, atol=1e-5)


def _loss_reference(audio, image, theta, heads, mask, positive, image_mask, cal_init=1.0):
    """Every DenseAV term from the formulas (official weights), independently of keras_avloc."""
    volume = _volume_reference(audio, image, heads)
    w = min(max(math.exp(theta), 0.01), 100.0)
    sims = w * _misa_reference(volume, mask)
    sims = sims - sims.mean()
    n = sims.shape[0]
    nce = 0.5 * -np.mean([_log_softmax(sims, 1)[i, i] for i in range(n)]) + \
        0.5 * -np.mean([_log_softmax(sims.T, 1)[i, i] for i in range(n)])
    paired = np.stack([volume[b, b] * mask[b][None, None, None, :] for b in range(n)])  # [B, K, h, w, t]
    terms = {"nce": nce, "nonneg": np.mean(np.minimum(volume, 0.0) ** 2)}
    silent = [(a, t) for a in range(n) for t in range(mask.shape[1]) if mask[a, t] == 0]
    terms["silence"] = np.mean([np.abs(volume[a, :, :, :, :, t]).mean() for a, t in silent]) if silent else 0.0
    num, den = 0.0, 0.0
    for b, k, y, x, t in itertools.product(*(range(s) for s in paired.shape)):
        weight = (1 - positive[b, t]) * mask[b, t]
        num += paired[b, k, y, x, t] ** 2 * weight
        den += weight
    terms["negative_audio"] = num / max(den, 0.1) if den > 0 else 0.0
    terms["tv"] = np.mean((paired[..., 1:] - paired[..., :-1]) ** 2)
    terms["cal_balance"] = max(math.log(cal_init) - math.log(w), 0.0) ** 2
    pairs = list(itertools.combinations(range(heads), 2))
    terms["specialization"] = np.mean([np.mean(np.abs(paired[:, i]) * np.abs(paired[:, j])) for i, j in pairs]) \
        if pairs else 0.0
    outside = 1.0 - image_mask
    num = sum((paired[b, k, y, x, t] * outside[b, y, x]) ** 2
              for b, k, y, x, t in itertools.product(*(range(s) for s in paired.shape)))
    terms["mixup"] = num / max(outside.sum() * heads * mask.shape[1], 0.1)
    weights = {"nonneg": 0.01, "silence": 0.01, "negative_audio": 0.01, "tv": 0.01, "cal_balance": 0.1,
               "specialization": 0.05, "mixup": 0.1}
    terms["loss"] = nce + sum(weights[name] * terms[name] for name in weights)
    return terms


@pytest.mark.parametrize("theta", [0.0, -0.7])
def test_loss_and_every_regulariser_match_the_formulas(theta):
    audio = RNG.normal(size=(3, 5, 4))
    image = RNG.normal(size=(3, 2, 3, 4))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]], float)
    positive = np.array([[1, 0.5, 0, 0.5, 1], [1, 1, 1, 1, 1], [0.2, 0, 1, 1, 1]], float)
    image_mask = np.ones((3, 2, 3))
    image_mask[1, :, 1:] = 0.0
    terms = denseav.denseav_loss_terms(audio.astype("float32"), image.astype("float32"), theta, 2, mask, positive,
                                       image_mask)
    reference = _loss_reference(audio, image, theta, 2, mask, positive, image_mask)
    for name, value in reference.items():
        assert float(terms[name]) == pytest.approx(value, rel=2e-4, abs=1e-5), name
    assert float(terms["temperature"]) == pytest.approx(math.exp(theta), rel=1e-5)
    # one head: no specialisation term in the loss
    one = denseav.denseav_loss_terms(audio.astype("float32"), image.astype("float32"), theta, 1, mask, positive,
                                     image_mask)
    ref_one = _loss_reference(audio, image, theta, 1, mask, positive, image_mask)
    expected = ref_one["loss"]
    assert float(one["loss"]) == pytest.approx(expected, rel=2e-4)


def _unit(x):
    return x / np.maximum(np.sqrt((x ** 2).sum(axis=-1, keepdims=True)), 1e-12)


def test_norm_vectors_scores_cosines_after_the_training_pooling():
    """The official `norm_vectors` (`prep_feats`: pool in training, then `F.normalize` over channels): the map, the
    NCE and every regulariser then read unit vectors, against numpy references of the formulas."""
    rng = np.random.default_rng(11)  # its own draws: the tests below read RNG in file order
    model = denseav.DenseAV(code_dim=12, backbone_kwargs={"width": 4}, norm_vectors=True, cal_init=14.3,
                            pretrain_steps=0)
    images = rng.normal(size=(3, 32, 32, 3)).astype("float32")
    audio = rng.normal(size=(3, 200, 32, 1)).astype("float32")  # no silent frame: every time step counts
    raw_image = np.asarray(model.image_encoder(images), np.float64)  # [B, h, w, D], before prep_feats
    raw_audio = np.asarray(model.audio_encoder(audio), np.float64)  # [B, t, D]
    image, sound = _unit(raw_image), _unit(raw_audio)

    outputs = model.evaluation_outputs(images, audio)
    assert np.asarray(outputs["mask"]).min() == 1.0
    np.testing.assert_allclose(np.linalg.norm(np.asarray(outputs["image_maps"]), axis=-1), 1.0, rtol=1e-5)
    volume = _volume_reference(sound, image, 2)  # [A, V, K, h, w, t]
    expected_maps = np.stack([volume[b, b].max(axis=0).mean(axis=-1) for b in range(3)])
    np.testing.assert_allclose(np.asarray(outputs["maps"]), expected_maps, rtol=1e-4, atol=1e-5)
    assert np.abs(expected_maps).max() <= 1.0 + 1e-6  # cosines

    ones = np.ones((3, raw_audio.shape[1]))
    terms = model.compute_batch_terms({"image": images, "audio": audio}, None, training=False)
    reference = _loss_reference(sound, image, math.log(14.3), 2, ones, ones, np.ones(image.shape[:3]), cal_init=14.3)
    for name in ("nce", "nonneg", "tv", "specialization", "cal_balance", "loss"):
        assert float(terms[name]) == pytest.approx(reference[name], rel=2e-4, abs=1e-5), name

    # training: the 2 x 2 pooling first, then unit vectors (pooled unit vectors would be shorter)
    pooled, same_audio = model.prepare_features(raw_image.astype("float32"), raw_audio.astype("float32"), training=True)
    h, w = raw_image.shape[1] // 2, raw_image.shape[2] // 2
    blocks = raw_image[:, : 2 * h, : 2 * w].reshape(3, h, 2, w, 2, -1).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(pooled), _unit(blocks), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(same_audio), sound, rtol=1e-5, atol=1e-6)
    # off (the official default): the features pass through untouched, and the option survives get_config
    rebuilt = denseav.DenseAV.from_config(model.get_config())
    assert rebuilt.norm_vectors and rebuilt.cal_init == pytest.approx(14.3)
    off = denseav.DenseAV(code_dim=12, backbone_kwargs={"width": 4})
    untouched, _ = off.prepare_features(raw_image.astype("float32"), raw_audio.astype("float32"))
    np.testing.assert_array_equal(np.asarray(untouched), raw_image.astype("float32"))


def test_splice_weights_are_the_official_raised_cosine():
    length, start, span, easing = 40, 7, 20, 6
    weights = np.asarray(denseav.raised_cosine_weights(length, np.array([start]), np.array([span]),
                                                       np.array([easing])))[0]
    fade_in = 0.5 * (1 + np.cos(np.pi * np.linspace(0, 1, easing)))  # `_splice_clips`
    ease = np.concatenate([fade_in, np.zeros(span - 2 * easing), 1 - fade_in])
    expected = np.concatenate([np.ones(start), ease, np.ones(length - start - span)])
    np.testing.assert_allclose(weights, expected, atol=1e-6)


def test_time_masks_resize_like_torch_bilinear_interpolation():
    mask = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1]], "float32")
    steps = 4
    scale = mask.shape[1] / steps
    centres = (np.arange(steps) + 0.5) * scale - 0.5  # half-pixel source coordinates
    expected = np.interp(np.clip(centres, 0, mask.shape[1] - 1), np.arange(mask.shape[1]), mask[0])
    np.testing.assert_allclose(np.asarray(denseav.resize_time_mask(mask, steps, discrete=False))[0], expected, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(denseav.resize_time_mask(mask, steps, discrete=True))[0], expected > 0.01)


def test_quad_grid_puts_the_own_frame_where_its_mask_is():
    images = np.stack([np.full((8, 8, 3), float(i)) for i in range(4)]).astype("float32")
    grids, own = (np.asarray(t) for t in denseav.quad_grid(images, np.array([0, 1, 2, 3])))
    for b in range(4):
        assert own[b].sum() == 16
        np.testing.assert_array_equal(grids[b][own[b] > 0], float(b))  # the own quadrant shows the own frame
        assert set(np.unique(grids[b][own[b] == 0])) == {float(i) for i in range(4)} - {float(b)}


def test_schedule_and_the_frozen_featurizers_of_phase_one(capsys):
    schedule = denseav.DenseAVSchedule(learning_rate=1e-3, pretrain_steps=3, pretrain_learning_rate=5e-5, warmup_steps=4)
    values = [float(schedule(step)) for step in range(9)]
    np.testing.assert_allclose(values, [5e-5] * 3 + [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3], rtol=1e-5)

    import tensorflow as tf

    model = denseav.DenseAV(code_dim=12, backbone_kwargs={"width": 4}, pretrain_steps=2, warmup_steps=1,
                            quad_mixup=0.0)
    model.compile()
    x = {"image": RNG.normal(size=(2, 32, 32, 3)).astype("float32"),
         "audio": RNG.normal(size=(2, 200, 32, 1)).astype("float32")}
    data = tf.data.Dataset.from_tensors((x, {"index": np.arange(2)}))

    def snapshot():
        return ([np.array(v) for v in model.audio_backbone.trainable_variables],
                [np.array(v) for v in model.audio_encoder.get_layer("time_pool_1").trainable_variables])

    features, aligner = snapshot()
    model.fit(data.repeat(2), epochs=1, verbose=0)
    features_1, aligner_1 = snapshot()
    assert all(np.array_equal(a, b) for a, b in zip(features, features_1))  # phase 1: featurizers frozen
    assert not all(np.array_equal(a, b) for a, b in zip(aligner, aligner_1))  # ... the aligners learn
    model.fit(data.repeat(2), epochs=1, verbose=0)
    features_2, _ = snapshot()
    assert not all(np.array_equal(a, b) for a, b in zip(features_1, features_2))  # phase 2: everything learns
    assert model.optimizer.clipnorm == 10.0 and model.optimizer.epsilon == 1e-7

    # A run that ends before the schedule's full rate (step 2 + 1 = 3) is told so, with the arguments to change
    from keras_avloc.training.train import _warn_short_schedule

    assert schedule.full_rate_step == 7  # values[6] is the first at 1e-3
    capsys.readouterr()
    _warn_short_schedule(model, "denseav", 1, data, 1)  # 1 step
    assert "reaches its full learning rate after 3 steps" in capsys.readouterr().out
    _warn_short_schedule(model, "denseav", 3, data, 1)  # 3 steps: the full rate at the last one
    assert capsys.readouterr().out == ""


def test_training_batches_get_negatives_silence_and_mixup():
    model = denseav.DenseAV(code_dim=12, backbone_kwargs={"width": 4}, quad_mixup=1.0, seed=3)
    images = RNG.normal(size=(4, 32, 32, 3)).astype("float32")
    audio = RNG.normal(size=(4, 400, 32, 1)).astype("float32")
    mixed, spliced, mask, positive, pixel_mask = (np.asarray(t) for t in model._augment(images, audio))
    positive, mask, pixel_mask = positive, mask, pixel_mask
    assert ((positive < 1).sum(axis=1) >= 100).all()  # 25-50% of the 400 frames are another clip's
    assert np.allclose(spliced[positive == 1][mask[positive == 1] > 0], audio[positive == 1][mask[positive == 1] > 0])
    assert ((mask.sum(axis=1) >= 100) & (mask.sum(axis=1) <= 400)).all()  # a window of at least 0.5 s
    floor = audio.min(axis=(1, 2, 3))
    for b in range(4):
        assert np.allclose(spliced[b][mask[b] == 0], floor[b])
        assert pixel_mask[b].mean() == pytest.approx(0.25)  # every image is a grid (quad_mixup=1)
    terms = model.compute_batch_terms({"image": images, "audio": audio}, None, training=True)
    assert float(terms["mixup"]) > 0 and float(terms["negative_audio"]) > 0 and np.isfinite(float(terms["loss"]))


def test_disentanglement_matches_the_official_definition():
    from sklearn.metrics import average_precision_score

    from keras_avloc.evaluation import disentanglement

    rng = np.random.default_rng(7)  # its own draws, so the test passes alone as in the file's order
    speech = rng.random((6, 2)) * [1.0, 0.2] + [0.0, 0.1]
    sound = rng.random((5, 2)) * [0.2, 1.0]
    result = disentanglement(speech, sound)
    scores = np.concatenate([speech, sound])
    scores = (scores - scores.min(0)) / (scores - scores.min(0)).max(0)
    labels = np.array([1] * 6 + [0] * 5)
    ap = [[average_precision_score(labels, scores[:, h]), average_precision_score(1 - labels, scores[:, h])]
          for h in range(2)]
    act = [[1 - scores[labels == 1, h].mean(), 1 - scores[labels == 0, h].mean()] for h in range(2)]
    np.testing.assert_allclose(result["ap"], ap)
    assert result["pred_dis"] == pytest.approx(max((ap[0][0] + ap[1][1]) / 2, (ap[0][1] + ap[1][0]) / 2))
    assert result["act_dis"] == pytest.approx(max((act[0][0] + act[1][1]) / 2, (act[0][1] + act[1][0]) / 2))
    assert result["pred_dis"] > 0.9  # head 0 answers speech, head 1 sound


@pytest.mark.long
def test_denseav_trains_resumes_evaluates_and_localises_per_head_on_real_media(tmp_path):
    import json
    import os

    from keras_avloc.cli import main
    from keras_avloc.data import load_split, make_dataset
    from keras_avloc.data import stamps as stamps_module
    from keras_avloc.evaluation import evaluate_model, evaluate_prompted
    from keras_avloc.models import load_model
    from keras_avloc.training import train

    root = str(tmp_path / "stamps")
    try:
        stamps_module.build_stamps(root, n_train=8, n_val=4, n_test=6, n_test_mix=0, n_test_ext=0, size=64, seed=2,
                                   n_speech=6, n_train_speech=8, n_test_speech_unseen=4,
                                   classes=["chicken", "cow", "dog"], progress=False)
    except stamps_module.MediaMissingError as err:
        pytest.fail(f"stamps media missing, run `bash tools/setup.sh`: {err}")
    train_speech = load_split(root, "train_speech")
    assert all(r["kind"] == "speech" and r["speech"] is not None and r["prompt"] for r in train_speech)
    assert {r["language"] for r in train_speech} <= set(stamps_module.SEEN_LANGUAGES) | {"en"}
    assert {r["language"] for r in load_split(root, "test_speech_unseen")} <= set(stamps_module.UNSEEN_LANGUAGES) | {"en"}
    for record in train_speech:  # the prompt lies inside the 3 s clip
        start, end = record["speech"]
        assert 0.0 <= start < end <= stamps_module.CLIP_SECONDS + 1e-6
    assert len(load_split(root, "train+train_speech")) == 16

    out = str(tmp_path / "run")
    kwargs = {"backbone_kwargs": {"width": 4}, "code_dim": 12, "pretrain_steps": 2, "warmup_steps": 2}
    model, history = train("denseav", root, out, epochs=1, batch_size=4, image_size=64, model_kwargs=kwargs,
                           verbose=0, seed=1)
    assert model.eval_settings["clip_seconds"] == 2.0  # the method's default clip length
    assert set(denseav.DenseAV.loss_term_names) <= set(history.history)
    assert np.isfinite(history.history["loss"][0])
    with open(os.path.join(out, "train_state.json")) as handle:
        assert json.load(handle)["settings"]["split"] == "train+train_speech"  # sound and speech by default
    _, more = train("denseav", root, out, epochs=2, batch_size=4, image_size=64, model_kwargs=kwargs, verbose=0,
                    seed=1)
    assert len(more.history["loss"]) == 1  # resumed: one more epoch
    restored = load_model(os.path.join(out, "model.keras"))
    assert int(restored.optimizer.iterations) > restored.pretrain_steps  # the optimizer state resumed into phase 2
    x, _ = next(iter(make_dataset(root, "test", frontend="csol", image_size=64, clip_seconds=2.0, batch_size=4)))
    heads = restored.localize_heads(x["image"], x["audio"])
    over_time = restored.localize_heads(x["image"], x["audio"], over_time=True)
    assert heads.shape == (4, 2, 64, 64) and over_time.shape[:2] == (4, 2) and over_time.shape[3:] == (64, 64)
    np.testing.assert_allclose(over_time.mean(axis=2), heads, rtol=1e-4, atol=1e-4)  # no silence in these clips
    metrics = evaluate_model(restored, root, split="test", protocol="stamps", out_dir=str(tmp_path / "eval"))
    assert 0.0 <= metrics["model"]["auc"] <= 1.0 and os.path.isfile(tmp_path / "eval" / "metrics.json")

    speech = evaluate_prompted(restored, root, "stamps-speech", out_dir=str(tmp_path / "speech"), progress=False)
    assert speech["split"] == "test_speech" and speech["model"]["samples"] == 6
    assert 0.0 <= speech["model"]["map"] <= 1.0 and 0.0 <= speech["model"]["miou"] <= 1.0
    assert speech["model"]["retrieval"]["pairs"] == 6 and "pred_dis" in speech["model"]["disentanglement"]
    assert 0.0 <= speech["model"]["advanced_map"] <= 1.0  # the time mean over the spoken word only
    assert set(speech["baselines"]) == {"center", "random"}
    assert os.path.isfile(tmp_path / "speech" / "heads.png")
    # the references: a class-agnostic model through the same protocol, and the command line
    lvs_like = evaluate_prompted(build_reference(), root, "stamps-sound", progress=False)
    assert lvs_like["model"]["samples"] == 6 and lvs_like["model"]["retrieval"]["pairs"] == 6
    assert main(["evaluate", "--checkpoint", os.path.join(out, "model.keras"), "--data", root, "--protocol",
                 "stamps-speech", "--split", "test_speech_unseen", "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    with open(tmp_path / "cli" / "metrics.json") as handle:
        assert json.load(handle)["split"] == "test_speech_unseen"

    # per-head heatmap videos over time, with the model's own (log-mel) front-end
    from keras_avloc.io.media import read_frames, write_video

    frames = RNG.integers(0, 255, size=(10, 64, 64, 3)).astype(np.uint8)
    wave = (0.4 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000.0)).astype(np.float32)
    write_video(str(tmp_path / "clip.mp4"), frames, 5, audio=wave, sample_rate=16000)
    assert main(["localize", "--checkpoint", os.path.join(out, "model.keras"), "--video", str(tmp_path / "clip.mp4"),
                 "--out", str(tmp_path / "heads.mp4"), "--heads", "--heatmap-fps", "2"]) == 0
    for head in range(2):
        overlay, _ = read_frames(str(tmp_path / f"heads_head{head}.mp4"))
        assert overlay.shape[1:] == (64, 64, 3) and not np.array_equal(overlay[0], frames[0])


def build_reference():
    from keras_avloc.models import build_model

    return build_model("ezvsl", backbone_kwargs={"width": 4}, embed_dim=8,
                       eval_settings={"image_size": 64, "clip_seconds": 1.0})


def test_image_lora_adapts_a_transformer_featurizer_and_survives_saving(tmp_path):
    import keras

    from keras_avloc.models import load_model

    def tiny_vit():
        inputs = keras.Input((32, 32, 3))
        patches = keras.layers.Conv2D(12, 8, strides=8, name="patches")(inputs)  # [B, 4, 4, 12]
        tokens = keras.layers.Reshape((16, 12))(patches)
        attended = keras.layers.MultiHeadAttention(2, 6, name="attention")(tokens, tokens)
        return keras.Model(inputs, keras.layers.Reshape((4, 4, 12))(keras.layers.Add()([tokens, attended])),
                           name="tiny_vit")

    with pytest.raises(ValueError, match="no MultiHeadAttention"):
        denseav.DenseAV(code_dim=12, backbone_kwargs={"width": 4}, image_lora_rank=8)  # the ResNet-18 has none
    model = denseav.DenseAV(code_dim=12, backbone_kwargs={"width": 4}, image_featurizer=tiny_vit(),
                            image_lora_rank=2, lora_alpha=4.0)
    attention = model.image_backbone.get_layer("attention")
    assert all(dense.lora_enabled and dense.lora_rank == 2 for dense in
               (attention._query_dense, attention._key_dense, attention._value_dense, attention._output_dense))
    frozen = {id(attention._query_dense.kernel)}  # the base kernel no longer trains; the LoRA factors do
    assert not any(id(v) in frozen for v in model.trainable_variables)
    assert any("lora" in v.path for v in model.trainable_variables)
    x = {"image": RNG.normal(size=(2, 32, 32, 3)).astype("float32"),
         "audio": RNG.normal(size=(2, 200, 32, 1)).astype("float32")}
    before = model.localize(x["image"], x["audio"])
    model.save(str(tmp_path / "lora.keras"))
    restored = load_model(str(tmp_path / "lora.keras"), compile=False)
    np.testing.assert_allclose(restored.localize(x["image"], x["audio"]), before, rtol=1e-5, atol=1e-5)


def test_word_masks_follow_the_official_timing_rule():
    """eval_utils: bounds = T * (timing -+ 0.2) / length, floor / ceil; mask = one_hot(bounds).cumsum().sum() == 1."""
    from keras_avloc.evaluation.prompted import _word_mean

    steps, length = 16, 3.0
    sims = RNG.normal(size=(2, 3, steps))
    for span in ((0.5, 1.2), (0.0, 0.3), (2.5, 3.0), (1.0, 1.0)):
        bounds = [int(np.floor(steps * (span[0] - 0.2) / length)), int(np.ceil(steps * (span[1] + 0.2) / length))]
        bounds = [min(max(bounds[0], 0), steps - 1), min(max(bounds[1], 1), steps)]  # inside the clip
        one_hot = np.zeros((2, steps + 1))
        one_hot[[0, 1], bounds] = 1
        mask = (one_hot.cumsum(axis=1).sum(axis=0) == 1)[:steps]
        np.testing.assert_allclose(_word_mean(sims, span, 0.0, length), sims[..., mask].mean(axis=-1))
    # a 2 s clip centred in the 3 s scene starts 0.5 s in: the span moves with it
    np.testing.assert_allclose(_word_mean(sims, (1.0, 1.5), 0.5, 2.0), _word_mean(sims, (0.5, 1.0), 0.0, 2.0))
