"""The shared `AVLocModel` base: fit/evaluate/predict, trackers, upsampling, and a tiny model that overfits."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_avloc.models import AVLocModel, build_model, ezvsl_loss_terms, lvs_loss_terms
from keras_avloc.models.base import upsample_maps

COLOURS = np.array([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0], [1.0, 1.0, -1.0]], np.float32)


class TinyAV(AVLocModel):
    """Two small conv encoders with a selectable method loss (a stand-in for the ResNet-18 models)."""

    def __init__(self, method="lvs", name="tiny_av", **kwargs):
        self.loss_term_names = ("loss", "positive") if method == "lvs" else ("loss", "image_to_audio")
        super().__init__(name=name, **kwargs)
        self.method = method
        self.image_backbone = keras.Sequential(
            [
                keras.Input((None, None, 3)),
                keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
                keras.layers.Conv2D(32, 1),
            ],
            name="tiny_image",
        )
        self.image_encoder = self.image_backbone
        self.audio_encoder = keras.Sequential(
            [
                # dense on the whole spectrogram: the classes differ by frequency position, which a
                # conv + global pool could not see
                keras.Input((16, 8, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(32, activation="relu"),
                keras.layers.Dense(32),
            ],
            name="tiny_audio",
        )

    def compute_loss_terms(self, image_maps, audio_vecs):
        if self.method == "lvs":
            return lvs_loss_terms(image_maps, audio_vecs, epsilon_positive=0.5, epsilon_negative=0.3)
        return ezvsl_loss_terms(image_maps, audio_vecs, tau=0.1)


def synthetic_pairs(count=8, size=32, side=10, seed=0):
    """Coloured squares on one shared noise background (so only the square tells the clips apart); each
    colour's 'sound' is a bright band at its own frequency rows."""
    rng = np.random.default_rng(seed)
    background = rng.normal(scale=0.3, size=(size, size, 3)).astype(np.float32)
    images = np.repeat(background[None], count, axis=0)
    audio = rng.normal(scale=0.3, size=(count, 16, 8, 1)).astype(np.float32)
    boxes = []
    for index in range(count):
        colour = index % len(COLOURS)
        y0, x0 = rng.integers(0, size - side, size=2)
        images[index, y0 : y0 + side, x0 : x0 + side] = COLOURS[colour]
        audio[index, 4 * colour : 4 * colour + 4] += 2.0
        boxes.append((y0, x0))
    return images, audio, boxes


@pytest.mark.parametrize("method", ["lvs", "ezvsl"])
def test_tiny_model_overfits_and_localises_the_object(method):
    keras.utils.set_random_seed(0)
    images, audio, boxes = synthetic_pairs(count=4)
    dataset = tf.data.Dataset.from_tensor_slices(({"image": images, "audio": audio}, {"label": np.zeros(4)}))
    dataset = dataset.batch(4).repeat(300)
    model = TinyAV(method)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    first = model.evaluate(dataset.take(1), verbose=0, return_dict=True)["loss"]
    model.fit(dataset, epochs=1, verbose=0)
    last = model.evaluate(dataset.take(1), verbose=0, return_dict=True)["loss"]
    assert last < 0.5 * first, (first, last)

    heatmaps = model.localize(images, audio)
    assert heatmaps.shape == (4, 32, 32)
    hits = 0
    for heatmap, (y0, x0) in zip(heatmaps, boxes):
        y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        hits += (y0 - 2 <= y < y0 + 12) and (x0 - 2 <= x < x0 + 12)
    assert hits >= 3, hits  # the peak sits on the sounding square (within 2 px) in at least 3 of 4 scenes


def test_fit_reports_all_loss_terms_and_predict_gives_heatmaps():
    images, audio, _ = synthetic_pairs(count=4)
    model = TinyAV("lvs")
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert abs(float(model.optimizer.learning_rate) - 1e-4) < 1e-9
    dataset = tf.data.Dataset.from_tensor_slices(({"image": images, "audio": audio}, {"gt_map": np.zeros((4, 32, 32))}))
    history = model.fit(dataset.batch(4), epochs=2, verbose=0)
    assert set(history.history) == {"loss", "positive"}
    # reported loss equals the pure loss function on the same features (after the update, in evaluate)
    result = model.evaluate(dataset.batch(4), verbose=0, return_dict=True)
    features = model({"image": images, "audio": audio})
    expected = float(lvs_loss_terms(features["image_maps"], features["audio_vecs"], 0.5, 0.3)["loss"])
    assert abs(result["loss"] - expected) < 1e-4
    predicted = model.predict({"image": images, "audio": audio}, verbose=0)
    np.testing.assert_allclose(predicted, model.localize(images, audio), atol=1e-5)


def test_half_pixel_upsampling_matches_cv2():
    import cv2

    maps = np.random.default_rng(0).normal(size=(2, 5, 7)).astype(np.float32)
    ours = upsample_maps(maps, (40, 56)).numpy()
    expected = np.stack([cv2.resize(m, (56, 40), interpolation=cv2.INTER_LINEAR) for m in maps])
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_bad_inputs_give_clear_errors():
    with pytest.raises(ValueError, match="unknown method"):
        build_model("nope")
    model = TinyAV("lvs")
    with pytest.raises(ValueError, match="'image' and 'audio'"):
        model({"image": np.zeros((1, 8, 8, 3), np.float32)})


def test_epoch_means_are_right_for_unknown_cardinality_static_batch_datasets():
    # make_dataset yields static batch shapes and unknown cardinality; in graph mode the exhausted final
    # iterator call must not add a batch weight to the trackers.
    images, audio, _ = synthetic_pairs(count=8)
    model = TinyAV("lvs")
    model.compile()
    dataset = tf.data.Dataset.from_tensor_slices(({"image": images, "audio": audio}, {"label": np.zeros(8)}))
    dataset = dataset.batch(4, drop_remainder=True).filter(lambda x, y: True)
    result = model.evaluate(dataset, verbose=0, return_dict=True)
    per_batch = []
    for start in (0, 4):
        features = model({"image": images[start : start + 4], "audio": audio[start : start + 4]})
        per_batch.append(float(lvs_loss_terms(features["image_maps"], features["audio_vecs"], 0.5, 0.3)["loss"]))
    assert abs(result["loss"] - np.mean(per_batch)) < 1e-4, (result["loss"], per_batch)


def test_compiled_localize_matches_numpy_and_follows_weight_updates():
    import cv2

    images, audio, _ = synthetic_pairs(count=3)

    def numpy_heatmaps(model):
        maps = model.image_encoder(images).numpy().astype(np.float64)
        vecs = model.audio_encoder(audio).numpy().astype(np.float64)
        maps /= np.linalg.norm(maps, axis=-1, keepdims=True)
        vecs /= np.linalg.norm(vecs, axis=-1, keepdims=True)
        cosine = np.einsum("bhwc,bc->bhw", maps, vecs).astype(np.float32)
        return np.stack([cv2.resize(m, (40, 24), interpolation=cv2.INTER_LINEAR) for m in cosine])

    model = TinyAV("lvs")
    first = model.localize(images, audio, image_size=(24, 40))
    np.testing.assert_allclose(first, numpy_heatmaps(model), atol=1e-5)
    # the compiled graph reads the live weights: a change after the first call shows up
    for variable in model.image_encoder.trainable_variables:
        variable.assign(variable * 0.5 + 0.1)
    second = model.localize(images, audio, image_size=(24, 40))
    assert np.abs(second - first).max() > 1e-3
    np.testing.assert_allclose(second, numpy_heatmaps(model), atol=1e-5)
    assert model.localize(images[:2], audio[:2]).shape == (2, 32, 32)  # a new shape traces again
