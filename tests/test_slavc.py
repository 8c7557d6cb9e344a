"""SLAVC: the loss against a numpy reference written from the official formula (log of a sum of softmax products, in
float64; not from keras_avloc), the momentum encoders (first-step copy, moving average, no gradient), the map, and
training through `avloc train`."""

import numpy as np
import pytest


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _normalise(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _scores(image, audio, tau):
    """s[n, m, p] = <image[n, p], audio[m]> / tau for image [B, h, w, D] and audio [B, D], both normalised."""
    batch = image.shape[0]
    flat = _normalise(image).reshape(batch, -1, image.shape[-1])
    return np.einsum("npc,mc->nmp", flat, _normalise(audio)) / tau


def reference_slavc(v, a, v_target, a_target, tau):
    """The official loss: heads are the two halves of the channels."""
    half = v.shape[-1] // 2

    def term(image, audio):
        first = _softmax(_scores(image[..., :half], audio[:, :half], tau), axis=1)
        second = _softmax(_scores(image[..., half:], audio[:, half:], tau), axis=2)
        logits = np.log((first * second).sum(axis=2))
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        return -np.mean(np.diag(log_probs))

    image_branch, audio_branch = term(v, a_target), term(v_target, a)
    return {"loss": image_branch + audio_branch, "image_branch": image_branch, "audio_branch": audio_branch}


@pytest.mark.parametrize("tau", [0.03, 0.3])
def test_slavc_loss_matches_the_reference(tau):
    from keras_avloc.models.slavc import slavc_loss_terms

    rng = np.random.default_rng(7)
    base = rng.normal(size=(1, 1, 1, 32))
    v = (base + rng.normal(size=(5, 4, 3, 32))).astype(np.float32)
    a = (base[:, 0, 0] + rng.normal(size=(5, 32))).astype(np.float32)
    v_target = (v + 0.3 * rng.normal(size=v.shape)).astype(np.float32)
    a_target = (a + 0.3 * rng.normal(size=a.shape)).astype(np.float32)
    expected = reference_slavc(*(x.astype(np.float64) for x in (v, a, v_target, a_target)), tau=tau)
    terms = slavc_loss_terms(v, a, v_target, a_target, tau=tau)
    for name, value in expected.items():
        np.testing.assert_allclose(float(terms[name]), value, rtol=2e-5, err_msg=name)


def test_no_gradient_reaches_the_targets_and_each_branch_trains_its_own_side():
    import tensorflow as tf

    from keras_avloc.models.slavc import slavc_loss_terms

    rng = np.random.default_rng(0)
    tensors = [tf.Variable(rng.normal(size=shape).astype(np.float32))
               for shape in [(4, 3, 3, 16), (4, 16), (4, 3, 3, 16), (4, 16)]]
    with tf.GradientTape(persistent=True) as tape:
        terms = slavc_loss_terms(*tensors)
    image_grads = tape.gradient(terms["image_branch"], tensors)
    audio_grads = tape.gradient(terms["audio_branch"], tensors)
    assert image_grads[0] is not None and image_grads[1] is None
    assert audio_grads[1] is not None and audio_grads[0] is None
    assert all(grad is None for grad in image_grads[2:] + audio_grads[2:])


def test_momentum_encoders_copy_then_average_and_are_not_trained():
    import keras

    from keras_avloc.models.slavc import SLAVC

    model = SLAVC(backbone_kwargs={"width": 8}, embed_dim=16, momentum=0.75)
    momentum_ids = {id(v) for v in model.momentum_image_encoder.weights + model.momentum_audio_encoder.weights}
    assert not momentum_ids & {id(v) for v in model.trainable_weights}
    assert momentum_ids <= {id(v) for v in model.non_trainable_weights}
    base = model.image_encoder.get_layer("image_projection_1").kernel
    target = model.momentum_image_encoder.get_layer("image_projection_1").kernel
    assert not np.allclose(base.numpy(), target.numpy())  # independent initialisations
    model.update_momentum_encoders()  # the first step copies
    np.testing.assert_array_equal(target.numpy(), base.numpy())
    start = target.numpy()
    base.assign(base.numpy() + 1.0)
    model.update_momentum_encoders()
    np.testing.assert_allclose(target.numpy(), 0.75 * start + 0.25 * (start + 1.0), rtol=1e-6)
    assert float(model.momentum_updates.numpy()) == 2.0
    # A step: the base weights move by their gradients, the momentum weights only by the average.
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    rng = np.random.default_rng(2)
    x = {"image": rng.normal(size=(4, 64, 64, 3)).astype(np.float32),
         "audio": rng.normal(size=(4, 257, 30, 1)).astype(np.float32)}
    before = target.numpy(), base.numpy()
    model.train_on_batch(x, {"index": np.arange(4)})
    np.testing.assert_allclose(target.numpy(), 0.75 * before[0] + 0.25 * before[1], rtol=1e-5, atol=1e-7)


def test_the_map_is_the_mean_of_the_two_heads_cosine_maps():
    from keras_avloc.models.slavc import SLAVC

    model = SLAVC(backbone_kwargs={"width": 8}, embed_dim=4)
    rng = np.random.default_rng(3)
    image_maps = rng.normal(size=(2, 3, 3, 8)).astype(np.float32)
    audio = rng.normal(size=(2, 8)).astype(np.float32)
    expected = 0.5 * sum(np.einsum("bhwc,bc->bhw", _normalise(image_maps[..., k:k + 4]), _normalise(audio[:, k:k + 4]))
                         for k in (0, 4))
    np.testing.assert_allclose(np.asarray(model.similarity_map(image_maps, audio)), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="localize_with"):
        SLAVC(backbone_kwargs={"width": 8}, embed_dim=4, localize_with="teacher")


def test_slavc_trains_through_avloc_train_and_reloads_with_its_momentum_state(tmp_path):
    from keras_avloc.models import load_model
    from keras_avloc.training import train
    from tiny_av_data import write_colour_tone_split

    data = tmp_path / "data"
    write_colour_tone_split(str(data), count=8, size=64, seconds=1.0)
    model, history = train("slavc", str(data), str(tmp_path / "run"), epochs=1, batch_size=4, image_size=64,
                           clip_seconds=1.0, model_kwargs={"backbone_kwargs": {"width": 8}, "embed_dim": 16},
                           seed=0, verbose=0, run_eagerly=True)
    assert np.isfinite(history.history["loss"][0]) and float(model.momentum_updates.numpy()) == 2.0
    reloaded = load_model(str(tmp_path / "run" / "model.keras"))
    assert float(reloaded.momentum_updates.numpy()) == 2.0
    for mine, theirs in zip(model.momentum_image_encoder.weights, reloaded.momentum_image_encoder.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    momentum = load_model(str(tmp_path / "run" / "model.keras"))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(1, 64, 64, 3)).astype(np.float32)
    audio = rng.normal(size=(1, 257, 30, 1)).astype(np.float32)
    assert reloaded.localize(images, audio).shape == (1, 64, 64)
    momentum.localize_with = "momentum"
    assert not np.allclose(momentum.localize(images, audio), reloaded.localize(images, audio))
    from keras_avloc.perf import fast_inference_model

    np.testing.assert_allclose(fast_inference_model(momentum).localize(images, audio), momentum.localize(images, audio),
                               rtol=1e-4, atol=1e-5)  # the folded path reads the momentum copies too
