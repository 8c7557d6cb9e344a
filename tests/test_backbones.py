"""ResNet18 backbone: shapes, torchvision layer names, BN settings, serialisation, mixed precision."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_avloc.backbones import ResNet18  # noqa: E402


def _torchvision_module_names():
    """Conv/BN module names of torchvision's resnet18, written out independently of the model code."""
    names = ["conv1", "bn1"]
    for stage in range(1, 5):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            names += [f"{prefix}.conv1", f"{prefix}.bn1", f"{prefix}.conv2", f"{prefix}.bn2"]
            if block == 0 and stage > 1:
                names += [f"{prefix}.downsample.0", f"{prefix}.downsample.1"]
    return names


@pytest.mark.parametrize(
    "input_channels, layer4_stride, size, expected",
    [
        (3, 2, (64, 64), (2, 2, 64)),
        (3, 1, (64, 64), (4, 4, 64)),
        (1, 2, (97, 61), (4, 2, 64)),  # ceil(97/32)=4, ceil(61/32)=2 (torch rounding, padding 1)
        (1, 1, (97, 61), (7, 4, 64)),
    ],
)
def test_output_shapes(input_channels, layer4_stride, size, expected):
    model = ResNet18(input_channels=input_channels, layer4_stride=layer4_stride, width=8)
    out = model(np.zeros((2, *size, input_channels), "float32"))
    assert tuple(out.shape) == (2, *expected)
    assert model.output_stride == 16 * layer4_stride and model.output_channels == 64


def test_full_width_shapes_at_224_and_lvs_spectrogram():
    image = ResNet18(layer4_stride=1, input_shape=(224, 224, 3), name="image_encoder")
    assert tuple(image.output.shape) == (None, 14, 14, 512)
    audio = ResNet18(input_channels=1, layer4_stride=2, input_shape=(257, 200, 1), name="audio_encoder")
    assert tuple(audio.output.shape) == (None, 9, 7, 512)
    # torchvision resnet18 without fc has 11,176,512 parameters; Keras adds 2 x 4,800 BN moving stats.
    assert image.count_params() == 11_176_512 + 9_600


def test_intermediate_maps():
    model = ResNet18(return_intermediate=True, width=8, layer4_stride=1)
    maps = model(np.zeros((1, 64, 64, 3), "float32"))
    assert list(maps) == ["stem", "layer1", "layer2", "layer3", "layer4"]
    shapes = {name: tuple(value.shape) for name, value in maps.items()}
    assert shapes == {
        "stem": (1, 32, 32, 8),
        "layer1": (1, 16, 16, 8),
        "layer2": (1, 8, 8, 16),
        "layer3": (1, 4, 4, 32),
        "layer4": (1, 4, 4, 64),
    }


def test_layer_names_follow_torchvision():
    model = ResNet18(width=8)
    weighted = {layer.name for layer in model.layers if layer.weights}
    expected = {name.replace(".", "_") for name in _torchvision_module_names()}
    assert weighted == expected
    assert all(not layer.use_bias for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


def test_batch_norm_matches_torch_defaults():
    model = ResNet18(width=8)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 20
    assert all(layer.epsilon == 1e-5 and layer.momentum == 0.9 for layer in norms)
    # One training step moves the running mean 10% of the way to the batch mean (torch momentum 0.1).
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype("float32") + 3.0
    stem = keras.Model(model.input, model.get_layer("conv1").output)
    conv_out = np.asarray(stem(x))
    model(x, training=True)
    np.testing.assert_allclose(
        np.asarray(model.get_layer("bn1").moving_mean), 0.1 * conv_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5
    )


def test_stem_padding_is_symmetric_like_torch():
    """A 1-channel all-ones kernel on a delta image: torch padding 3 puts the response at (i+3)//2."""
    model = ResNet18(input_channels=1, width=8, layer4_stride=1, return_intermediate=True)
    conv1 = model.get_layer("conv1")
    kernel = np.zeros(conv1.kernel.shape, "float32")
    kernel[:, :, 0, 0] = 1.0
    conv1.kernel.assign(kernel)
    stem_conv = keras.Model(model.input, conv1.output)
    x = np.zeros((1, 16, 16, 1), "float32")
    x[0, 0, 0, 0] = 1.0  # top-left pixel
    out = np.asarray(stem_conv(x))[0, :, :, 0]
    # Reference: output (r, c) covers input rows 2r-3 .. 2r+3 (torch: stride 2, padding 3 each side).
    reference = np.zeros((8, 8), "float32")
    for r in range(8):
        for c in range(8):
            reference[r, c] = float(2 * r - 3 <= 0 <= 2 * r + 3 and 2 * c - 3 <= 0 <= 2 * c + 3)
    np.testing.assert_array_equal(out, reference)


def test_config_round_trip_and_keras_file(tmp_path):
    model = ResNet18(input_channels=1, layer4_stride=1, width=8, name="audio_encoder")
    config = model.get_config()
    assert config["input_channels"] == 1 and config["layer4_stride"] == 1 and config["width"] == 8
    clone = ResNet18.from_config(config)
    assert clone.name == "audio_encoder" and clone.count_params() == model.count_params()
    path = str(tmp_path / "audio.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, ResNet18)
    x = np.random.default_rng(1).standard_normal((1, 40, 36, 1)).astype("float32")
    np.testing.assert_allclose(np.asarray(restored(x)), np.asarray(model(x)), atol=1e-6)


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="layer4_stride"):
        ResNet18(layer4_stride=3)
    with pytest.raises(ValueError, match="input_shape"):
        ResNet18(input_channels=1, input_shape=(224, 224, 3))


def test_mixed_bfloat16_policy():
    reference = ResNet18(width=8)
    x = np.random.default_rng(2).standard_normal((2, 64, 64, 3)).astype("float32")
    expected = np.asarray(reference(x))
    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        model = ResNet18(width=8)
        model.set_weights(reference.get_weights())
        out = model(x)
        assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
        assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in model.weights)
        out = np.asarray(keras.ops.cast(out, "float32"))
        # bf16 keeps 8 mantissa bits; errors stay at a few percent of the feature scale.
        assert np.max(np.abs(out - expected)) < 0.05 * np.max(np.abs(expected)) + 1e-3
        # Gradients flow in mixed precision (float32 variables, bf16 compute).
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.cast(model(x, training=True), "float32"))
        grads = tape.gradient(loss, model.trainable_weights)
        assert all(g is not None and np.all(np.isfinite(np.asarray(g))) for g in grads)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.mixed_precision.global_policy().name == previous.name


def test_reflect_padding_matches_numpy_and_keeps_the_weights():
    from keras_avloc.backbones import ResNet18
    from keras_avloc.layers import ReflectPadding2D

    x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
    for mode in ("reflect", "symmetric"):
        out = np.asarray(ReflectPadding2D(2, mode=mode)(x))
        np.testing.assert_array_equal(out, np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode=mode))
    zeros = ResNet18(width=8, layer4_stride=1)
    mirrored = ResNet18(width=8, layer4_stride=1, padding="reflect")
    assert [w.shape for w in zeros.weights] == [w.shape for w in mirrored.weights]
    mirrored.set_weights(zeros.get_weights())
    image = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(np.float32)
    a, b = np.asarray(zeros(image)), np.asarray(mirrored(image))
    assert a.shape == b.shape and not np.allclose(a, b)  # only the padding differs
    assert ResNet18.from_config(mirrored.get_config()).padding == "reflect"
