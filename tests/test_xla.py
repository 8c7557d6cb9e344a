"""Every registered method's training step (loss and gradients) compiles under XLA (`jit_compile=True`) on CPU and
computes what TensorFlow's own kernels compute.

For each method, from its tiny configuration in float32 on one seeded batch, with batch norms and dropout in
inference mode (so that both sides compute the same function): the loss within 1e-4 relative, and all gradients
together within 5% in norm. Most methods agree to ~1e-5; EZ-VSL (8e-3) and FNAC (2e-2) take a max over locations,
where float32 sums in another order can pick another of two nearly tied cells (docs/performance.md).

XLA stays off by default (`avloc train`): on CPU it trains these models about 2x slower.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from tiny_configs import tiny_batch

from keras_avloc.models import build_model, get_method_class, method_names


def _loss_and_gradients(model, x, y):
    with tf.GradientTape() as tape:
        loss = model.compute_batch_terms(x, y, training=False)["loss"]
    return loss, tape.gradient(loss, model.trainable_weights)


@pytest.mark.parametrize("method", method_names())
def test_the_training_step_compiles_under_xla_and_matches_the_uncompiled_step(method):
    keras.utils.set_random_seed(3)
    x, y = tiny_batch(get_method_class(method), np.random.default_rng(3), batch=4)
    model = build_model(method, **get_method_class(method).tiny_config)
    model(x, training=False)
    x = tf.nest.map_structure(tf.constant, x)
    y = tf.nest.map_structure(tf.constant, y)
    plain_loss, plain_gradients = _loss_and_gradients(model, x, y)  # eager: TensorFlow's own kernels
    xla_loss, xla_gradients = tf.function(_loss_and_gradients, jit_compile=True)(model, x, y)
    np.testing.assert_allclose(float(xla_loss), float(plain_loss), rtol=1e-4, atol=1e-5, err_msg=method)
    pairs = [(np.ravel(tf.convert_to_tensor(plain)), np.ravel(tf.convert_to_tensor(xla)))
             for plain, xla in zip(plain_gradients, xla_gradients) if plain is not None]
    assert len(pairs) == sum(xla is not None for xla in xla_gradients), method
    plain, xla = np.concatenate([p for p, _ in pairs]), np.concatenate([q for _, q in pairs])
    error = float(np.linalg.norm(xla - plain) / np.linalg.norm(plain))
    assert error < 5e-2, (method, error)
