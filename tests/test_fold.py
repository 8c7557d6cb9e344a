"""Batch-norm folding (`keras_avloc.backbones.fold`): folded ResNet-18s equal the eval-mode originals."""

import numpy as np
import pytest

import keras

from keras_avloc.backbones import ResNet18
from keras_avloc.backbones.fold import count_batch_norms, fold_batch_norms, foldable_pairs, folded_conv_weights


def randomize_batch_norms(model, seed=0):
    """Non-trivial BN statistics and affine parameters, so no BN is an identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomize_batch_norms(layer, seed + 1)
        elif isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels).astype("float32"))
            layer.beta.assign(rng.normal(0.0, 0.2, channels).astype("float32"))
            layer.moving_mean.assign(rng.normal(0.0, 0.3, channels).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, channels).astype("float32"))
    return model


def numpy_conv2d_valid(x, kernel, stride=1):
    """Plain loop-over-taps 'valid' convolution, NHWC input, [kh, kw, in, out] kernel."""
    kh, kw, _, out_channels = kernel.shape
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], out_h, out_w, out_channels))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * out_h : stride, j : j + stride * out_w : stride, :]
            y += patch @ kernel[i, j]
    return y


@pytest.mark.parametrize("input_channels, layer4_stride", [(3, 2), (3, 1), (1, 1), (1, 2)])
def test_folded_resnet18_equals_eval_mode_original(input_channels, layer4_stride):
    model = randomize_batch_norms(ResNet18(input_channels=input_channels, layer4_stride=layer4_stride, width=8))
    folded = fold_batch_norms(model)

    assert len(foldable_pairs(model)) == 20  # every BN of ResNet-18 follows a conv
    assert count_batch_norms(folded) == 0
    convs = [layer for layer in folded.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 20 and all(conv.use_bias for conv in convs)

    x = np.random.default_rng(1).normal(size=(2, 64, 64, input_channels)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    actual = keras.ops.convert_to_numpy(folded(x))
    assert actual.shape == expected.shape == (2, 64 // (16 * layer4_stride), 64 // (16 * layer4_stride), 64)
    assert np.abs(expected).max() > 0.1  # a meaningful comparison, not of zeros
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


def test_folding_nested_encoder_and_intermediate_outputs():
    backbone = ResNet18(input_channels=1, layer4_stride=1, width=8)
    inputs = keras.Input((None, None, 1), name="audio")
    vectors = keras.layers.GlobalMaxPooling2D(name="pool")(backbone(inputs))
    encoder = randomize_batch_norms(keras.Model(inputs, vectors, name="audio_encoder"))
    folded = fold_batch_norms(encoder)
    assert count_batch_norms(folded) == 0 and folded.name == "audio_encoder_folded"
    x = np.random.default_rng(2).normal(size=(3, 65, 48, 1)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(x)), keras.ops.convert_to_numpy(encoder(x, training=False)), atol=1e-4
    )

    multi = randomize_batch_norms(ResNet18(width=8, return_intermediate=True), seed=3)
    folded_multi = fold_batch_norms(multi)
    image = np.random.default_rng(4).normal(size=(1, 64, 64, 3)).astype("float32")
    expected = multi(image, training=False)
    actual = folded_multi(image)
    assert sorted(actual) == sorted(expected) == ["layer1", "layer2", "layer3", "layer4", "stem"]
    for key in expected:
        np.testing.assert_allclose(keras.ops.convert_to_numpy(actual[key]), keras.ops.convert_to_numpy(expected[key]), atol=1e-4)


def test_folded_conv_weights_against_numpy_conv_then_batch_norm():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 7, 6, 3))
    kernel = rng.normal(size=(3, 3, 3, 4))
    bias = rng.normal(size=4)
    gamma, beta = rng.uniform(0.5, 2.0, 4), rng.normal(size=4)
    mean, variance, epsilon = rng.normal(size=4), rng.uniform(0.2, 3.0, 4), 1e-5

    conv = numpy_conv2d_valid(x, kernel, stride=2) + bias
    reference = gamma * (conv - mean) / np.sqrt(variance + epsilon) + beta
    new_kernel, new_bias = folded_conv_weights(kernel, bias, gamma, beta, mean, variance, epsilon)
    np.testing.assert_allclose(numpy_conv2d_valid(x, new_kernel, stride=2) + new_bias, reference, rtol=1e-5, atol=1e-5)

    # No conv bias, no BN affine (center=False, scale=False).
    new_kernel, new_bias = folded_conv_weights(kernel, None, None, None, mean, variance, epsilon)
    reference = (numpy_conv2d_valid(x, kernel) - mean) / np.sqrt(variance + epsilon)
    np.testing.assert_allclose(numpy_conv2d_valid(x, new_kernel) + new_bias, reference, rtol=1e-5, atol=1e-5)


def test_batch_norm_without_preceding_conv_is_kept_and_subclassed_models_are_refused():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization(name="input_bn")(inputs)
    x = keras.layers.Conv2D(4, 3, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    branch = keras.layers.Conv2D(4, 1, name="shared_conv")(inputs)
    # The conv output feeds a BN *and* an add: folding would change the add's input, so it is kept.
    y = keras.layers.BatchNormalization(name="bn_branch")(branch)
    out = keras.layers.Add()([keras.layers.ZeroPadding2D(1)(x), y, branch])
    model = randomize_batch_norms(keras.Model(inputs, out))
    assert foldable_pairs(model) == {"bn": "conv"}
    folded = fold_batch_norms(model)
    assert count_batch_norms(folded) == 2
    data = np.random.default_rng(6).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(folded(data)), keras.ops.convert_to_numpy(model(data, training=False)), atol=1e-5
    )

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="functional"):
        fold_batch_norms(Subclassed())
