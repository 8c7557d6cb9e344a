"""`keras_avloc.perf`: fused batch norm, the fast inference path, settings helpers, and a smoke run of
`benchmarks/bench_train.py`."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_avloc import perf
from keras_avloc.layers import FusedBatchNormalization

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numpy_batch_norm(x, gamma, beta, mean, variance, epsilon):
    return gamma * (x - mean) / np.sqrt(variance + epsilon) + beta


@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_matches_numpy_formula_and_keras_layer(training):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, size=(3, 5, 6, 4)).astype("float32")
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.normal(size=4)
    moving_mean, moving_variance = rng.normal(size=4), rng.uniform(0.5, 2.0, 4)
    layers = [cls(epsilon=1e-5, momentum=0.9) for cls in (FusedBatchNormalization, keras.layers.BatchNormalization)]
    results = []
    for layer in layers:
        layer.build(x.shape)
        layer.set_weights([gamma, beta, moving_mean, moving_variance])
        inputs = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=training)
            loss = tf.reduce_sum(tf.square(y) * tf.range(1.0, 5.0))
        grads = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
        results.append([np.asarray(value) for value in [y, *grads, layer.moving_mean, layer.moving_variance]])

    # Independent reference of the published formula (biased batch variance, momentum 0.9).
    if training:
        batch_mean, batch_variance = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
        expected_y = numpy_batch_norm(x, gamma, beta, batch_mean, batch_variance, 1e-5)
        expected_mean = 0.9 * moving_mean + 0.1 * batch_mean
        expected_variance = 0.9 * moving_variance + 0.1 * batch_variance
    else:
        expected_y = numpy_batch_norm(x, gamma, beta, moving_mean, moving_variance, 1e-5)
        expected_mean, expected_variance = moving_mean, moving_variance
    fused, reference = results
    np.testing.assert_allclose(fused[0], expected_y, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused[4], expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused[5], expected_variance, rtol=1e-5, atol=1e-6)
    for fused_value, keras_value in zip(fused, reference):
        scale = max(1.0, float(np.abs(keras_value).max()))
        np.testing.assert_allclose(fused_value / scale, keras_value / scale, atol=2e-5)


def test_fused_batch_norm_serializes_and_runs_in_bfloat16():
    layer = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name="bn1")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(clone) is FusedBatchNormalization and clone.epsilon == 1e-5 and clone.name == "bn1"
    bf16 = FusedBatchNormalization(dtype="mixed_bfloat16")
    x = np.random.default_rng(1).normal(size=(2, 4, 4, 3)).astype("float32")
    y = bf16(tf.cast(x, tf.bfloat16), training=True)
    assert y.dtype == tf.bfloat16
    expected = (x - x.mean(axis=(0, 1, 2))) / np.sqrt(x.var(axis=(0, 1, 2)) + 1e-3)
    np.testing.assert_allclose(np.asarray(tf.cast(y, tf.float32)), expected, atol=0.05)


def test_fast_inference_model_matches_localize():
    from keras_avloc.models.lvs import LVS

    model = LVS(backbone_kwargs={"width": 8})
    rng = np.random.default_rng(2)
    for encoder in (model.image_backbone, model.audio_backbone):
        for layer in encoder.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                channels = layer.moving_mean.shape[0]
                layer.set_weights(
                    [rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.2, channels), rng.normal(0, 0.3, channels), rng.uniform(0.5, 2, channels)]
                )
    images = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    audio = rng.normal(size=(2, 65, 32, 1)).astype("float32")
    localizer = perf.fast_inference_model(model)
    fast = localizer.localize(images, audio)
    expected = model.localize(images, audio)
    assert fast.shape == expected.shape == (2, 64, 64) and fast.dtype == np.float32
    assert expected.std() > 1e-3
    np.testing.assert_allclose(fast, expected, atol=1e-4)
    with pytest.raises(TypeError, match="image_encoder"):
        perf.fast_inference_model(keras.Sequential([keras.layers.Dense(1)]))


def test_settings_helpers_refuse_late_changes_clearly(monkeypatch):
    tf.constant(1.0) + 1.0  # make sure the TensorFlow runtime has started
    current = tf.config.threading.get_intra_op_parallelism_threads()
    assert perf.configure_threads(intra=current) == {
        "intra": current,
        "inter": tf.config.threading.get_inter_op_parallelism_threads(),
    }
    with pytest.raises(RuntimeError, match="configure_threads must run before"):
        perf.configure_threads(intra=current + 3)

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert perf.configure_onednn(False) is False
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0" and "already imported" in str(caught[0].message)
    assert perf.configure_onednn(False) is True  # unchanged value: nothing to warn about


@pytest.mark.long
def test_bench_train_smoke_prints_table():
    command = [
        sys.executable, os.path.join(REPO, "benchmarks", "bench_train.py"),
        "--steps", "1", "--warmup", "0", "--batch-size", "2", "--image-size", "64", "--audio-seconds", "0.5", "--no-torch",
        "--keras-variants", "as-built,plain",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "audio 257x32" in out  # 0.5 s -> 32 spectrogram frames
    table = out[out.index("framework") :].splitlines()
    rows = {tuple(line.split()[:3]) for line in table[1:] if line.strip()}
    assert {("keras", "fp32", "train"), ("keras", "fp32", "localize"), ("keras", "fp32", "localize-fast"),
            ("keras+plain", "fp32", "train")} <= rows
    for line in table[1:4]:
        clips_per_second = float(line.split()[3])
        assert clips_per_second > 0


@pytest.mark.parametrize("preset, expected", [(None, True), ("0", False)])
def test_importing_keras_avloc_turns_onednn_on_unless_the_user_chose(preset, expected):
    env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
    if preset is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = preset
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    code = "import keras_avloc, os; from keras_avloc import perf; print(os.environ['TF_ENABLE_ONEDNN_OPTS'], perf.onednn_enabled())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    value, enabled = result.stdout.split()[-2:]
    assert value == ("1" if preset is None else preset)
    assert enabled == str(expected)
