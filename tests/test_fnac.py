"""FNAC: the loss against a numpy reference written from the paper's and the official code's formulas (not from
keras_avloc), the warm-up switch, the image dropout, and training through `avloc train`."""

import numpy as np
import pytest


def _softmax_rows(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _cross_entropy(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return -np.mean(np.diag(log_probs))


def reference_fnac(image_maps, audio, tau=0.03, weights=(100.0, 100.0, 100.0), threshold=0.6):
    """FNAC's terms in float64, channels-last image maps [B, h, w, C], one clip at a time where the formula is."""
    v = image_maps / np.maximum(np.linalg.norm(image_maps, axis=-1, keepdims=True), 1e-12)
    a = audio / np.maximum(np.linalg.norm(audio, axis=-1, keepdims=True), 1e-12)
    batch, height, width, _ = v.shape
    logits = np.zeros((batch, batch))
    for n in range(batch):
        for m in range(batch):
            logits[n, m] = max(v[n, y, x] @ a[m] for y in range(height) for x in range(width)) / tau
    contrastive = _cross_entropy(logits) + _cross_entropy(logits.T)
    audio_affinity = a @ a.T / tau
    means = v.reshape(batch, -1, v.shape[-1]).mean(axis=1)
    image_affinity = means @ means.T / tau
    foreground = np.zeros_like(means)
    for n in range(batch):
        own = np.einsum("hwc,c->hw", v[n], a[n]) / tau
        located = (own - own.min()) / (own.max() - own.min() + 1e-5)
        foreground[n] = (v[n] * (located > threshold)[..., None]).reshape(-1, v.shape[-1]).sum(axis=0) / (height * width)
    foreground_affinity = foreground @ foreground.T / tau
    fns_audio = np.abs(_softmax_rows(audio_affinity) - _softmax_rows(logits)).mean()
    tns = np.abs(_softmax_rows(audio_affinity) - _softmax_rows(foreground_affinity)).mean()
    fns_image = np.abs(_softmax_rows(image_affinity) - _softmax_rows(logits)).mean()
    total = contrastive + weights[0] * fns_audio + weights[1] * tns + weights[2] * fns_image
    return {"loss": total, "contrastive": contrastive, "fns_audio": fns_audio, "tns": tns, "fns_image": fns_image}


@pytest.mark.parametrize("tau", [0.03, 0.2])
def test_fnac_loss_terms_match_the_reference(tau):
    from keras_avloc.models.fnac import fnac_loss_terms

    rng = np.random.default_rng(4)
    # Correlated features, so that the affinities differ from clip to clip and some maps cross the 0.6 threshold.
    base = rng.normal(size=(1, 1, 1, 24))
    image_maps = (base + 0.7 * rng.normal(size=(6, 5, 4, 24))).astype(np.float32)
    audio = (base[:, 0, 0] + 0.7 * rng.normal(size=(6, 24))).astype(np.float32)
    expected = reference_fnac(image_maps.astype(np.float64), audio.astype(np.float64), tau=tau)
    terms = fnac_loss_terms(image_maps, audio, tau=tau)
    for name, value in expected.items():
        np.testing.assert_allclose(float(terms[name]), value, rtol=2e-5, atol=1e-7, err_msg=name)
    assert expected["fns_audio"] > 1e-4 and expected["tns"] > 1e-4 and expected["fns_image"] > 1e-4
    off = fnac_loss_terms(image_maps, audio, tau=tau, regularise=0.0)
    np.testing.assert_allclose(float(off["loss"]), expected["contrastive"], rtol=2e-5)


def test_the_regularisers_have_gradients_on_both_sides():
    """No stop-gradient: the audio-audio affinity (a 'target' in the paper's words) trains the audio network too."""
    import tensorflow as tf

    from keras_avloc.models.fnac import fnac_loss_terms

    rng = np.random.default_rng(0)
    image_maps = tf.Variable(rng.normal(size=(4, 3, 3, 8)).astype(np.float32))
    audio = tf.Variable(rng.normal(size=(4, 8)).astype(np.float32))
    with tf.GradientTape() as tape:
        tns = fnac_loss_terms(image_maps, audio)["tns"]  # softmax(A_aa) vs softmax(A_ff): both sides
    image_gradient, audio_gradient = tape.gradient(tns, [image_maps, audio])
    assert float(tf.reduce_max(tf.abs(image_gradient))) > 0 and float(tf.reduce_max(tf.abs(audio_gradient))) > 0


def test_warmup_switches_the_regularisers_on_after_its_epochs_and_dropout_acts_in_training_only():
    from keras_avloc.models.fnac import FNAC, FNACWarmup

    model = FNAC(backbone_kwargs={"width": 8}, embed_dim=16, warmup_epochs=2)
    switch = FNACWarmup(model)
    switch.on_epoch_begin(0)
    assert float(model.regularizer_gate.numpy()) == 0.0
    switch.on_epoch_begin(1)
    assert float(model.regularizer_gate.numpy()) == 0.0
    switch.on_epoch_begin(2)
    assert float(model.regularizer_gate.numpy()) == 1.0
    assert [type(c) for c in model.training_callbacks(None, None, None)] == [FNACWarmup]
    assert model.image_encoder.get_layer("image_dropout").rate == 0.9
    rng = np.random.default_rng(1)
    images = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    inference = [np.asarray(model.encode_image(images, training=False)) for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    training = np.asarray(model.encode_image(images, training=True))
    assert not np.allclose(training, inference[0])


def test_fnac_trains_through_avloc_train_with_its_warmup(tmp_path):
    """Two epochs with a one-epoch warm-up: the first epoch's loss is the contrastive term alone, the second adds the
    weighted regularisers; the gate is saved with the model."""
    from keras_avloc.models import load_model
    from keras_avloc.training import train
    from tiny_av_data import write_colour_tone_split

    data = tmp_path / "data"
    write_colour_tone_split(str(data), count=8, size=64, seconds=1.0)
    model, history = train("fnac", str(data), str(tmp_path / "run"), epochs=2, batch_size=4, image_size=64,
                           clip_seconds=1.0, model_kwargs={"backbone_kwargs": {"width": 8}, "embed_dim": 16,
                                                           "warmup_epochs": 1},
                           seed=0, verbose=0, run_eagerly=True)
    logs = history.history
    np.testing.assert_allclose(logs["loss"][0], logs["contrastive"][0], rtol=1e-5)
    regularised = logs["contrastive"][1] + 100 * (logs["fns_audio"][1] + logs["tns"][1] + logs["fns_image"][1])
    np.testing.assert_allclose(logs["loss"][1], regularised, rtol=1e-4)
    assert logs["loss"][1] > logs["contrastive"][1]
    reloaded = load_model(str(tmp_path / "run" / "model.keras"))
    assert float(reloaded.regularizer_gate.numpy()) == 1.0 and reloaded.warmup_epochs == 1
    assert reloaded.weight_decay == 1e-4 and reloaded.image_dropout == 0.9
