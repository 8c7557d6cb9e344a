"""LVS loss against an independent numpy implementation of the paper/official formula, plus the model."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


import numpy as np
import pytest
import tensorflow as tf

from keras_avloc.models import LVS, build_model, load_model, lvs_loss, lvs_loss_terms


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lvs_loss(image_maps, audio_vecs, eps_p=0.65, eps_n=0.4, tau=0.03, temp=0.07, hard=True, official_diag=False):
    """Reference written from the formulas, one sample at a time in float64."""
    img = image_maps.astype(np.float64)
    aud = audio_vecs.astype(np.float64)
    img = img / np.maximum(np.linalg.norm(img, axis=-1, keepdims=True), 1e-12)
    aud = aud / np.maximum(np.linalg.norm(aud, axis=-1, keepdims=True), 1e-12)
    batch = img.shape[0]
    losses = []
    for n in range(batch):
        own = img[n] @ aud[n]  # [h, w]
        pos = _sigmoid((own - eps_p) / tau)
        neg = 1.0 - _sigmoid((own - eps_n) / tau)
        row = [np.sum(pos * own) / np.sum(pos)]
        for k in range(batch):
            other = img[n] @ aud[k]
            pos_k = _sigmoid((other - eps_p) / tau)
            value = np.sum(pos_k * other) / np.sum(pos_k)
            if k == n:
                if not official_diag:
                    continue
                value = value * (1.0 - 100.0)
            row.append(value)
        if hard:
            row.append(np.sum(neg * own) / np.sum(neg))
        logits = np.array(row) / temp
        top = logits.max()
        log_norm = top + np.log(np.sum(np.exp(logits - top)))
        losses.append(log_norm - logits[0])
    return float(np.mean(losses))


def _random_features(seed, batch=5, size=6, channels=16, correlated=False):
    rng = np.random.default_rng(seed)
    image = rng.random((batch, size, size, channels)).astype(np.float32)
    audio = rng.random((batch, channels)).astype(np.float32)
    if correlated:  # matched pairs share a direction -> positive diagonal similarities above eps_p
        audio = image.mean(axis=(1, 2)) + 0.05 * audio
    return image, audio


@pytest.mark.parametrize(
    "kwargs, ref_kwargs",
    [
        ({}, {}),
        ({"hard_negatives": False}, {"hard": False}),
        ({"epsilon_positive": 0.5, "epsilon_negative": 0.3, "tau": 0.05}, {"eps_p": 0.5, "eps_n": 0.3, "tau": 0.05}),
        ({"diagonal": "official"}, {"official_diag": True}),
    ],
)
def test_lvs_loss_matches_numpy_reference(kwargs, ref_kwargs):
    for seed, correlated in ((0, False), (1, True)):
        image, audio = _random_features(seed, correlated=correlated)
        ours = float(lvs_loss(image, audio, **kwargs))
        reference = numpy_lvs_loss(image, audio, **ref_kwargs)
        assert abs(ours - reference) <= 1e-5 * max(1.0, abs(reference)), (ours, reference)


def test_lvs_loss_signed_features_match_reference():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(4, 5, 7, 32)).astype(np.float32)
    audio = rng.normal(size=(4, 32)).astype(np.float32)
    assert abs(float(lvs_loss(image, audio)) - numpy_lvs_loss(image, audio)) < 1e-5


def test_masked_and_official_diagonal_agree_when_diagonal_is_positive():
    image, audio = _random_features(4, correlated=True)
    terms = lvs_loss_terms(image, audio)
    assert float(terms["positive"]) > 0.5  # the own-pair similarities are positive here
    masked = float(lvs_loss(image, audio, diagonal="mask"))
    official = float(lvs_loss(image, audio, diagonal="official"))
    assert abs(masked - official) < 1e-5


def test_official_diagonal_trick_breaks_for_negative_similarity():
    rng = np.random.default_rng(5)
    directions = rng.normal(size=(4, 8)).astype(np.float32)
    image = directions[:, None, None, :] + 0.1 * rng.normal(size=(4, 4, 4, 8)).astype(np.float32)
    audio = -directions  # own pairs anti-correlated everywhere -> negative diagonal
    masked = float(lvs_loss(image, audio, diagonal="mask"))
    official = float(lvs_loss(image, audio, diagonal="official"))
    # -100x a negative similarity becomes a huge positive logit in the official code.
    assert official > masked + 50.0
    assert abs(masked - numpy_lvs_loss(image, audio)) < 1e-4


def test_lvs_loss_gradients_are_finite():
    image, audio = _random_features(6)
    image_var, audio_var = tf.Variable(image), tf.Variable(audio)
    with tf.GradientTape() as tape:
        loss = lvs_loss(image_var, audio_var)
    grads = tape.gradient(loss, [image_var, audio_var])
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.abs(g.numpy()).max() > 0 for g in grads)


def test_lvs_logits_are_soft_averages_divided_by_temperature():
    image, audio = _random_features(7)
    terms = lvs_loss_terms(image, audio)
    assert terms["logits"].shape == (5, 1 + 5 + 1)
    img = image.astype(np.float64) / np.linalg.norm(image.astype(np.float64), axis=-1, keepdims=True)
    aud = audio.astype(np.float64) / np.linalg.norm(audio.astype(np.float64), axis=-1, keepdims=True)
    own = np.einsum("bhwc,bc->bhw", img, aud)
    pos = _sigmoid((own - 0.65) / 0.03)
    neg = 1.0 - _sigmoid((own - 0.4) / 0.03)
    expected_positive = (pos * own).sum(axis=(1, 2)) / pos.sum(axis=(1, 2)) / 0.07
    expected_hard = (neg * own).sum(axis=(1, 2)) / neg.sum(axis=(1, 2)) / 0.07
    np.testing.assert_allclose(terms["logits"][:, 0], expected_positive, rtol=1e-5)
    np.testing.assert_allclose(terms["logits"][:, -1], expected_hard, rtol=1e-5)


def test_lvs_model_shapes_and_stride_one_layer4():
    model = LVS(backbone_kwargs={"width": 8})
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    audio = np.random.default_rng(1).normal(size=(2, 65, 40, 1)).astype(np.float32)
    features = model({"image": images, "audio": audio})
    assert features["image_maps"].shape == (2, 4, 4, 64)  # 64 / 16: layer4 stride 1
    assert features["audio_vecs"].shape == (2, 64)  # global max pool
    heatmaps = model.localize(images, audio)
    assert heatmaps.shape == (2, 64, 64)
    raw = model.similarity_map(features["image_maps"], features["audio_vecs"]).numpy()
    # upsampling keeps the value range of the cosine map
    assert heatmaps.max() <= raw.max() + 1e-5 and heatmaps.min() >= raw.min() - 1e-5
    assert isinstance(build_model("lvs", backbone_kwargs={"width": 8}), LVS)


def test_load_official_checkpoint_from_npz(resnet_fixtures):
    """The fixture is a width-8 checkpoint in the official layout written by torch
    (tests/fixtures/make_resnet_fixture.py, made once per run): `module.imgnet.*` / `module.audnet.*` with the unused stems of the
    official nets. The loaded model must reproduce torch's layer4 outputs on the fixture's inputs."""
    fixtures = resnet_fixtures
    model = LVS(backbone_kwargs={"width": 8})
    report = model.load_official_checkpoint(str(fixtures / "lvs_w8_checkpoint.npz"))
    assert {"conv1.weight", "conv1_flow.weight", "fc.weight"} <= set(report["audio"]["ignored"])
    assert {"conv1_a.weight", "conv1_flow.weight", "fc.weight"} <= set(report["image"]["ignored"])
    with np.load(fixtures / "resnet18_w8_outputs.npz") as torch_outputs:
        image = model.image_backbone(torch_outputs["image_input"], training=False).numpy()
        audio = model.audio_backbone(torch_outputs["audio_input"], training=False).numpy()
        assert np.max(np.abs(image - torch_outputs["image_stride1"])) < 1e-4
        assert np.max(np.abs(audio - torch_outputs["audio_stride1"])) < 1e-4


def test_save_load_round_trip(tmp_path):
    model = LVS(epsilon_positive=0.6, backbone_kwargs={"width": 8})
    model.compile()
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    audio = np.random.default_rng(1).normal(size=(2, 33, 20, 1)).astype(np.float32)
    path = str(tmp_path / "lvs.keras")
    model.save(path)
    restored = load_model(path)
    assert isinstance(restored, LVS) and restored.epsilon_positive == 0.6
    np.testing.assert_allclose(restored.localize(images, audio), model.localize(images, audio), atol=1e-6)


def test_image_dropout_is_an_option_that_drops_features_in_training_only(tmp_path):
    model = LVS(image_dropout=0.5, backbone_kwargs={"width": 8})
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
    plain = model.image_encoder(images, training=True).numpy()
    dropped = model.encode_image(images, training=True).numpy()
    zeroed = (dropped == 0) & (plain != 0)
    assert 0.3 < zeroed.mean() / (plain != 0).mean() < 0.7  # about half the features dropped ...
    np.testing.assert_allclose(dropped[dropped != 0], 2 * plain[dropped != 0], rtol=1e-5)  # ... the rest scaled by 2
    np.testing.assert_array_equal(model.encode_image(images).numpy(), model.image_encoder(images).numpy())
    model.compile()
    model.save(str(tmp_path / "lvs.keras"))
    assert load_model(str(tmp_path / "lvs.keras")).image_dropout == 0.5
    assert LVS(backbone_kwargs={"width": 8}).feature_dropout is None  # the official default: no dropout layer
    with pytest.raises(ValueError, match="image_dropout"):
        LVS(image_dropout=1.0)
