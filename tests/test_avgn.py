"""AVGN: losses against numpy references of the published formulas, grouping layers, model shapes,
hard assignment, save/load, and a tiny model that learns to localise two synthetic sources."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import keras
from keras_avloc.models.avgn import (
    AVGN,
    avgn_class_loss,
    avgn_localization_loss,
    avgn_loss_terms,
    avgn_token_loss,
    labels_from_targets,
    multi_hot_targets,
)
from keras_avloc.layers.grouping import GroupAssignment, GroupingEncoder


# --------------------------------------------------------------------------- numpy references
def _log_softmax(values):
    values = np.asarray(values, np.float64)
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def reference_localization_loss(image_maps, tokens, mask, tau):
    """L_loc = 1/|valid| sum over valid (b, n) of both InfoNCE directions, sim = max over locations."""
    batch, _, _, dim = image_maps.shape
    feats = _unit(image_maps.reshape(batch, -1, dim).astype(np.float64))
    toks = _unit(tokens.astype(np.float64))

    def sim(audio_b, n, image_m):
        return max(float(np.dot(feats[image_m, p], toks[audio_b, n])) for p in range(feats.shape[1])) / tau

    total, count = 0.0, 0
    for n in range(tokens.shape[1]):
        valid = [b for b in range(batch) if mask[b, n]]
        for b in valid:
            total -= _log_softmax([sim(b, n, m) for m in range(batch)])[b]
            total -= _log_softmax([sim(other, n, b) for other in valid])[valid.index(b)]
            count += 1
    return total / max(count, 1)


def reference_bce(logits, targets):
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return float(-np.mean(targets * np.log(probs) + (1 - targets) * np.log(1 - probs)))


def reference_token_loss(token_logits):
    return float(-np.mean([_log_softmax(row)[i] for i, row in enumerate(token_logits)]))


# --------------------------------------------------------------------------- losses
def test_multi_hot_targets_from_mixture_and_single_labels():
    mixture = np.asarray(multi_hot_targets(np.array([[2, -1], [0, 1], [3, 3]]), 4))
    np.testing.assert_array_equal(mixture, [[0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]])
    single = np.asarray(multi_hot_targets(np.array([1, -1]), 3))
    np.testing.assert_array_equal(single, [[0, 1, 0], [0, 0, 0]])


def test_localization_loss_matches_reference_with_missing_sources():
    rng = np.random.default_rng(0)
    image_maps = rng.normal(size=(5, 3, 2, 8)).astype("float32")
    tokens = rng.normal(size=(5, 2, 8)).astype("float32")
    mask = np.array([[1, 1], [1, 0], [1, 1], [1, 0], [1, 1]], bool)
    for tau in (0.03, 0.5):
        got = float(avgn_localization_loss(image_maps, tokens, mask, tau=tau))
        want = reference_localization_loss(image_maps, tokens, mask, tau)
        np.testing.assert_allclose(got, want, rtol=2e-4)


def test_localization_loss_single_source_equals_symmetric_cross_entropy():
    # One source per clip: the paper's L_loc = CE(logits) + CE(logits^T) with logits[b, m].
    rng = np.random.default_rng(1)
    image_maps = rng.normal(size=(4, 2, 2, 6)).astype("float32")
    tokens = rng.normal(size=(4, 1, 6)).astype("float32")
    feats = _unit(image_maps.reshape(4, -1, 6).astype(np.float64))
    toks = _unit(tokens[:, 0].astype(np.float64))
    logits = np.einsum("bd,mpd->bmp", toks, feats).max(-1) / 0.03
    want = np.mean([-_log_softmax(logits[b])[b] for b in range(4)])
    want += np.mean([-_log_softmax(logits[:, m])[m] for m in range(4)])
    got = float(avgn_localization_loss(image_maps, tokens, np.ones((4, 1), bool), tau=0.03))
    np.testing.assert_allclose(got, want, rtol=2e-4)


def test_class_and_token_losses_match_reference():
    rng = np.random.default_rng(2)
    audio_logits = rng.normal(size=(3, 5)).astype("float32") * 3
    visual_logits = rng.normal(size=(3, 5)).astype("float32") * 3
    audio_targets = (rng.random((3, 5)) > 0.5).astype("float32")
    visual_targets = (rng.random((3, 5)) > 0.5).astype("float32")
    got = float(avgn_class_loss(audio_logits, visual_logits, audio_targets, visual_targets))
    want = reference_bce(audio_logits, audio_targets) + reference_bce(visual_logits, visual_targets)
    np.testing.assert_allclose(got, want, rtol=1e-5)

    token_logits = rng.normal(size=(5, 5)).astype("float32") * 2
    np.testing.assert_allclose(float(avgn_token_loss(token_logits)), reference_token_loss(token_logits), rtol=1e-5)


@pytest.mark.parametrize("visible_sources", ["first", "all"])
def test_total_loss_matches_reference(visible_sources):
    rng = np.random.default_rng(3)
    batch, classes, dim = 4, 5, 8
    outputs = {
        "image_maps": rng.normal(size=(batch, 2, 2, dim)).astype("float32"),
        "audio_tokens": rng.normal(size=(batch, classes, dim)).astype("float32"),
        "audio_logits": rng.normal(size=(batch, classes)).astype("float32"),
        "visual_logits": rng.normal(size=(batch, classes)).astype("float32"),
    }
    labels = np.array([[0, 3], [2, -1], [4, 1], [1, -1]])
    token_logits = rng.normal(size=(classes, classes)).astype("float32")
    terms = avgn_loss_terms(outputs, labels, token_logits, tau=0.03, visible_sources=visible_sources)
    terms = {name: float(value) for name, value in terms.items()}

    # Audio hears every source; the frame shows source 0 only ("first") or all of them ("all").
    shown = labels if visible_sources == "all" else labels[:, :1]
    audio_targets, visual_targets = np.zeros((batch, classes)), np.zeros((batch, classes))
    for b in range(batch):
        audio_targets[b, labels[b][labels[b] >= 0]] = 1
        visual_targets[b, shown[b][shown[b] >= 0]] = 1
    chosen = np.stack([outputs["audio_tokens"][b, np.maximum(shown[b], 0)] for b in range(batch)])
    want_loc = reference_localization_loss(outputs["image_maps"], chosen, shown >= 0, 0.03)
    want_class = reference_bce(outputs["audio_logits"], audio_targets)
    want_class += reference_bce(outputs["visual_logits"], visual_targets)
    want_token = reference_token_loss(token_logits)
    np.testing.assert_allclose(terms["loc_loss"], want_loc, rtol=2e-4)
    np.testing.assert_allclose(terms["class_loss"], want_class, rtol=1e-5)
    np.testing.assert_allclose(terms["token_loss"], want_token, rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], want_loc + want_class + want_token, rtol=2e-4)


def test_labels_from_dataset_targets():
    single = labels_from_targets({"label": tf.constant([3, -1]), "index": tf.constant([0, 1])})
    np.testing.assert_array_equal(np.asarray(single), [[3], [-1]])
    mixed = labels_from_targets({"label": tf.constant([3, 1]), "labels": tf.constant([[3, 0], [1, -1]])})
    np.testing.assert_array_equal(np.asarray(mixed), [[3, 0], [1, -1]])
    with pytest.raises(ValueError, match="needs class labels"):
        labels_from_targets({"gt_map": tf.zeros((2, 4, 4))})


# --------------------------------------------------------------------------- grouping layers
def _dense_np(layer, x):
    kernel, bias = (np.asarray(w, np.float64) for w in layer.weights)
    return x @ kernel + bias


def test_soft_assignment_sums_to_one_over_groups_and_matches_reference():
    rng = np.random.default_rng(4)
    layer = GroupAssignment(8, hard=False)
    layer.build()
    tokens = rng.normal(size=(2, 3, 8)).astype("float32")
    features = rng.normal(size=(2, 6, 8)).astype("float32")
    pooled, assignment = layer(tokens, features)
    assignment = np.asarray(assignment)
    np.testing.assert_allclose(assignment.sum(axis=1), 1.0, atol=1e-6)

    q = _dense_np(layer.q_proj, tokens)
    k = _dense_np(layer.k_proj, features)
    v = _dense_np(layer.v_proj, features)
    logits = q @ k.transpose(0, 2, 1) / np.sqrt(8)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    weights = soft / (soft.sum(-1, keepdims=True) + 1.0)  # normalised over features, eps = 1
    np.testing.assert_allclose(assignment, soft, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pooled), _dense_np(layer.proj, weights @ v), atol=1e-4)


def test_hard_assignment_is_one_hot_with_gradients():
    rng = np.random.default_rng(5)
    layer = GroupAssignment(8, hard=True, seed=1)
    layer.build()
    tokens = tf.constant(rng.normal(size=(2, 4, 8)).astype("float32"))
    features = tf.constant(rng.normal(size=(2, 10, 8)).astype("float32"))
    with tf.GradientTape() as tape:
        pooled, assignment = layer(tokens, features, training=True)
        loss = tf.reduce_sum(pooled * tf.range(8, dtype="float32"))
    assignment = np.asarray(assignment)
    assert set(np.unique(np.round(assignment, 6))) <= {0.0, 1.0}
    np.testing.assert_allclose(assignment.sum(axis=1), 1.0, atol=1e-6)
    gradient = np.asarray(tape.gradient(loss, layer.q_proj.kernel))
    assert np.all(np.isfinite(gradient)) and np.abs(gradient).max() > 0


def test_grouping_encoder_shapes():
    encoder = GroupingEncoder(16, num_groups=5, depth=2, num_heads=4)
    encoder.build()
    tokens, assignment = encoder(np.zeros((3, 7, 16), "float32"), np.ones((5, 16), "float32"))
    assert tokens.shape == (3, 5, 16) and assignment.shape == (3, 5, 7)


# --------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def resnet_model():
    return AVGN(class_names=list("abcde"), embed_dim=32, depth=1, num_heads=4, backbone_kwargs={"width": 8})


def test_model_needs_the_number_of_classes():
    with pytest.raises(ValueError, match="num_classes"):
        AVGN()
    with pytest.raises(ValueError, match="assignment"):
        AVGN(num_classes=3, assignment="sparse")


def _inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 64, 64, 3)).astype("float32"), rng.normal(size=(batch, 257, 24, 1)).astype("float32")


def test_model_shapes_for_classes_and_sources(resnet_model):
    images, audio = _inputs(batch=2)
    outputs = resnet_model({"image": images, "audio": audio})
    assert outputs["image_maps"].shape == (2, 2, 2, 32)
    assert outputs["audio_tokens"].shape == (2, 5, 32) and outputs["visual_tokens"].shape == (2, 5, 32)
    assert outputs["audio_logits"].shape == (2, 5) and outputs["visual_logits"].shape == (2, 5)
    np.testing.assert_allclose(np.asarray(outputs["visual_assignment"]).sum(axis=1), 1.0, atol=1e-5)

    maps, class_ids, probs = resnet_model.localize_sources(images, audio, n_sources=3)
    assert maps.shape == (2, 3, 64, 64) and class_ids.shape == (2, 3) and probs.shape == (2, 5)
    # Predicted sources are the most probable audio classes, in decreasing order.
    np.testing.assert_array_equal(class_ids, np.argsort(-probs, axis=1)[:, :3])
    assert np.all(maps >= -1.0001) and np.all(maps <= 1.0001)
    # A threshold above every probability keeps only the most probable class.
    maps, thresholded, _ = resnet_model.localize_sources(images, audio, n_sources=3, min_probability=1.01)
    np.testing.assert_array_equal(thresholded[:, 0], class_ids[:, 0])
    assert np.all(thresholded[:, 1:] == -1) and np.all(maps[:, 1:] == -1.0)

    given = np.array([[4, -1], [0, 2]])
    maps, class_ids, _ = resnet_model.localize_sources(images, audio, class_ids=given, image_size=(32, 48))
    assert maps.shape == (2, 2, 32, 48)
    np.testing.assert_array_equal(class_ids, given)
    np.testing.assert_allclose(maps[0, 1], -1.0)
    assert resnet_model.localize(images, audio).shape == (2, 64, 64)


def test_keras_save_load_round_trip(resnet_model, tmp_path):
    images, audio = _inputs(batch=2, seed=1)
    path = str(tmp_path / "avgn.keras")
    resnet_model.save(path)
    restored = keras.saving.load_model(path, compile=False)
    assert isinstance(restored, AVGN) and restored.num_classes == 5 and restored.class_names == list("abcde")
    assert restored.get_config() == resnet_model.get_config()
    for before, after in zip(resnet_model.localize_sources(images, audio), restored.localize_sources(images, audio)):
        np.testing.assert_allclose(after, before, atol=1e-5)


def test_hard_assignment_model_forward_is_one_hot_and_trainable():
    model = AVGN(num_classes=4, embed_dim=16, depth=1, num_heads=4, assignment="hard", **_tiny_encoders(16))
    images, audio = _inputs(batch=3)
    with tf.GradientTape() as tape:
        outputs = model({"image": images, "audio": audio[:, :64]}, training=True)
        loss = model.compute_loss_terms(outputs, np.array([[0, 1], [2, -1], [3, 0]]))["loss"]
    assignment = np.asarray(outputs["visual_assignment"])
    assert set(np.unique(np.round(assignment, 6))) <= {0.0, 1.0}
    gradients = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in gradients)
    assert np.abs(np.asarray(_gradient_of(gradients, model, "class_tokens"))).max() > 0


def _gradient_of(gradients, model, name):
    for gradient, weight in zip(gradients, model.trainable_weights):
        if weight.path.endswith(name):
            return gradient
    raise AssertionError(f"no weight named {name}")


# --------------------------------------------------------------------------- learning
def _tiny_encoders(dim):
    image_in = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(image_in)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    image_encoder = keras.Model(image_in, keras.layers.Conv2D(dim, 3, strides=2, padding="same")(x))
    # The audio kernel spans all 64 frequency bins, so the tone's frequency survives the max pool.
    audio_in = keras.Input((64, None, 1))
    a = keras.layers.Conv2D(32, (64, 1), activation="relu")(audio_in)
    audio_encoder = keras.Model(audio_in, keras.layers.Dense(dim)(keras.layers.GlobalMaxPooling2D()(a)))
    return {"image_encoder": image_encoder, "audio_encoder": audio_encoder}


LEARNING_RATE, BATCH, STEPS = 3e-3, 32, 300
COLOURS = np.array([[1.5, -1, -1], [-1, 1.5, -1], [-1, -1, 1.5], [1.5, 1.5, -1]], "float32")


def _synthetic_mixtures(count, rng, show="first"):
    """Mixtures of two of four classes: a coloured 24x24 square per class in a random quadrant of a
    64x64 frame, a tone band per class in a 64-bin spectrogram. With show="first" the frame holds
    source 0 only (the AVGN / make_dataset training protocol); with show="all" it holds both."""
    images = rng.normal(0, 0.1, (count, 64, 64, 3)).astype("float32")
    spectrograms = rng.normal(0, 0.1, (count, 64, 16, 1)).astype("float32")
    labels = np.zeros((count, 2), "int32")
    boxes = np.zeros((count, 2, 4), "int32")
    for i in range(count):
        classes, quadrants = rng.choice(4, 2, replace=False), rng.choice(4, 2, replace=False)
        for j in range(2):
            top, left = (quadrants[j] // 2) * 32 + 4, (quadrants[j] % 2) * 32 + 4
            if j == 0 or show == "all":
                images[i, top:top + 24, left:left + 24] += COLOURS[classes[j]]
            spectrograms[i, 6 + 14 * classes[j]: 10 + 14 * classes[j], :, 0] += 1.0
            boxes[i, j] = (top, left, top + 24, left + 24)
        labels[i] = classes
    return images, spectrograms, labels, boxes


def _peak_in_box(heatmap, box):
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return box[0] <= row < box[2] and box[1] <= col < box[3]


def _box_mean(heatmap, box):
    return heatmap[box[0]:box[2], box[1]:box[3]].mean()


def test_tiny_model_learns_to_separate_two_synthetic_sources():
    keras.utils.set_random_seed(0)
    images, spectrograms, labels, _ = _synthetic_mixtures(512, np.random.default_rng(0))
    model = AVGN(num_classes=4, embed_dim=32, depth=1, num_heads=4, **_tiny_encoders(32))
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    train = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "audio": spectrograms}, {"labels": labels, "label": labels[:, 0]})
    ).batch(BATCH, drop_remainder=True)
    history = model.fit(train.repeat().take(STEPS), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][-1])

    test_images, test_audio, test_labels, test_boxes = _synthetic_mixtures(64, np.random.default_rng(1), show="all")
    # Inference predicts the classes of the mixture from the audio alone.
    maps, class_ids, probs = model.localize_sources(test_images, test_audio, n_sources=2)
    assert maps.shape == (64, 2, 64, 64) and probs.shape == (64, 4)
    class_accuracy = np.mean([set(class_ids[i]) == set(test_labels[i]) for i in range(64)])
    assert class_accuracy >= 0.75, class_accuracy  # chance: 1/6

    # Each source's map is brighter on its own object than on the other one (chance 1/2) and peaks
    # inside its own 24x24 square far more often than the 14% a random peak would.
    maps, _, _ = model.localize_sources(test_images, test_audio, class_ids=test_labels)
    pairs = [(i, j) for i in range(64) for j in range(2)]
    separated = np.mean([_box_mean(maps[i, j], test_boxes[i, j]) > _box_mean(maps[i, j], test_boxes[i, 1 - j])
                         for i, j in pairs])
    peaks = np.mean([_peak_in_box(maps[i, j], test_boxes[i, j]) for i, j in pairs])
    assert separated >= 0.8, separated
    assert peaks >= 0.25, peaks
