"""IEr: every term against a numpy reference written from the paper's formulas (not from keras_avloc's code),
the distinguishing step, the five mask thresholds on a hand-made batch, a tiny referrer on synthetic features
that learns to drop an off-screen class and a silent visible object, the interference scenes, and both
stages with `train`, `evaluate_interference` and the command line on a tiny real-media build.
"""

import json
import os

import numpy as np
import pytest

from keras_avloc.data import audio as audio_frontends
from keras_avloc.data import stamps as stamps_module
from keras_avloc.models import ier
from tiny_av_data import STAMPS_CLASSES, build_tiny_stamps

RNG = np.random.default_rng(21)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---- the terms ---------------------------------------------------------------------------------------
def test_aii_loss_is_the_mean_multi_label_bce_over_labelled_rows():
    logits = RNG.normal(scale=3.0, size=(5, 4))
    targets = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 1, 0], [0, 1, 0, 0]], float)
    valid = np.array([1, 1, 0, 1, 1], float)
    p = _sigmoid(logits)
    bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    expected = sum(bce[i].mean() for i in range(5) if valid[i]) / valid.sum()
    exact = [np.array_equal(logits[i] > 0, targets[i] > 0) for i in range(5)]
    terms = ier.aii_loss_terms(logits.astype("float32"), targets.astype("float32"), valid.astype("float32"))
    np.testing.assert_allclose(float(terms["aii_loss"]), expected, rtol=1e-5)
    np.testing.assert_allclose(float(terms["aii_accuracy"]), sum(e for e, v in zip(exact, valid) if v) / 4)


def test_prototype_logits_and_class_expanded_features():
    audio = RNG.normal(size=(3, 6)).astype("float32")
    steps = RNG.normal(size=(3, 4, 6)).astype("float32")
    prototypes = RNG.normal(size=(4, 6)).astype("float32")
    expanded = np.asarray(ier.class_expanded_features(audio, steps))
    for b in range(3):
        for k in range(4):
            np.testing.assert_allclose(expanded[b, k], audio[b] + steps[b, k], rtol=1e-6)
    logits = np.asarray(ier.prototype_logits(expanded, prototypes, 7.0, -2.0))
    expected = [[7.0 * _unit(audio[b] + steps[b, k]) @ _unit(prototypes[k]) - 2.0 for k in range(4)] for b in range(3)]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(ier.class_expanded_features(audio, np.zeros_like(steps))),
                                  np.repeat(audio[:, None], 4, axis=1))  # F_k = f_a when Delta = 0


def test_mixtures_sum_powers_of_rolled_clips_and_take_the_union_of_labels():
    specs = RNG.uniform(-80.0, 0.0, size=(4, 5, 3, 1)).astype("float32")
    levels = RNG.uniform(-6.0, 6.0, size=(4, 4)).astype("float32")
    labels = np.array([2, 0, -1, 1])
    for n in (1, 2, 3):
        power = 10 ** (specs / 10)
        for j in range(1, n):
            partner = np.roll(specs, -j, axis=0) + levels[:, j][:, None, None, None]
            power = power + 10 ** (partner / 10)
        db = 10 * np.log10(power)
        expected = np.maximum(db, db.max(axis=(1, 2, 3), keepdims=True) - 80.0)
        np.testing.assert_allclose(np.asarray(ier.mix_logmels(specs, n, levels)), expected, rtol=1e-4, atol=1e-3)
        assert ier.TOP_DB == audio_frontends.CSOL_TOP_DB  # the floor of the front-end the mixtures come from
        mixed = np.asarray(ier.mixture_labels(labels, n, 4))
        for i in range(4):
            members = [labels[(i + j) % 4] for j in range(n)]
            assert mixed[i].tolist() == members + [-1] * (4 - n)
            hot = np.asarray(ier.multi_hot(mixed, 3))[i]
            assert hot.tolist() == [float(c in members) for c in range(3)]


def test_curriculum_rises_from_half_to_nine_tenths_and_two_to_four_sources():
    assert ier.curriculum(0, 5) == (0.5, 2)
    p, n = ier.curriculum(2, 5)
    assert abs(p - 0.7) < 1e-9 and n == 3
    assert ier.curriculum(4, 5) == (0.9, 4) and ier.curriculum(40, 5) == (0.9, 4)
    model = ier.IErStageOne(num_clusters=3, embed_dim=8, backbone_kwargs={"width": 8})
    object.__setattr__(model, "_mix", (0.75, 3))
    draws = [int(model.class_step_options(np.random.default_rng(s))["sources"]) for s in range(400)]
    assert set(draws) == {1, 3} and 0.68 < np.mean(np.array(draws) == 3) < 0.82


def test_prototype_maps_and_class_av_maps_are_softmaxed_and_scaled_cosines():
    features = RNG.uniform(0, 1, size=(2, 3, 3, 5)).astype("float32")
    dictionary = RNG.uniform(0, 1, size=(4, 5)).astype("float32")
    expected = _softmax(6.0 * np.einsum("bhwc,kc->bhwk", _unit(features), _unit(dictionary)))
    np.testing.assert_allclose(np.asarray(ier.prototype_maps(features, dictionary, 6.0)), expected, rtol=1e-5)
    image_maps = RNG.normal(size=(2, 3, 3, 6)).astype("float32")
    expanded = RNG.normal(size=(2, 4, 6)).astype("float32")
    expected = 5.0 * np.einsum("bhwd,bkd->bhwk", _unit(image_maps), _unit(expanded))
    np.testing.assert_allclose(np.asarray(ier.class_av_logits(image_maps, expanded, 5.0)), expected, rtol=1e-5,
                               atol=1e-6)


def test_each_mask_threshold_on_a_hand_made_batch():
    # Two images, 2 x 2 locations, two classes. Image 0 peaks at 0.8 (class 0), image 1 at 0.4 (class 1).
    maps = np.zeros((2, 2, 2, 2), "float32")
    maps[0, :, :, 0] = [[0.8, 0.5], [0.1, 0.1]]
    maps[0, :, :, 1] = [[0.2, 0.3], [0.45, 0.0]]
    maps[1, :, :, 0] = [[0.1, 0.15], [0.1, 0.1]]
    maps[1, :, :, 1] = [[0.4, 0.3], [0.25, 0.0]]
    weights = {name: np.asarray(ier.visual_mask_weights(maps, name, ratio=0.5, value=0.35)) for name in ier.MASK_THRESHOLDS}
    np.testing.assert_allclose(weights["fixed"], [[2 / 4, 1 / 4], [0, 1 / 4]])            # > 0.35
    np.testing.assert_allclose(weights["batch_max"], [[2 / 4, 1 / 4], [0, 0]])            # > 0.4 (0.5 x 0.8)
    np.testing.assert_allclose(weights["image_max"], [[2 / 4, 1 / 4], [0, 3 / 4]])        # > 0.4, > 0.2
    np.testing.assert_allclose(weights["gap"], maps.mean(axis=(1, 2)), rtol=1e-6)
    # batch_mean, per class: class 0's batch mean is 0.24375 (on: 0.8, 0.5), class 1's 0.2375 (on: 0.3, 0.45, 0.4,
    # 0.3, 0.25). Over all classes the mean of a softmax map would be the constant 1/K.
    np.testing.assert_allclose(weights["batch_mean"], [[2 / 4, 2 / 4], [0, 3 / 4]])
    softmaxed = _softmax(RNG.normal(size=(3, 4, 4, 5)))
    class_means = softmaxed.mean(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(ier.visual_mask_weights(softmaxed.astype("float32"), "batch_mean")),
                               (softmaxed > class_means).mean(axis=(1, 2)))
    with pytest.raises(ValueError, match="image_max"):
        ier.visual_mask_weights(maps, "median")


def test_guided_distribution_and_symmetric_kl():
    logits = np.array([[3.0, 2.0, -1.0], [0.0, 0.0, 0.0]], "float32")
    weights = np.array([[0.5, 0.0, 0.25], [0.0, 0.0, 0.0]], "float32")
    product = _sigmoid(logits) * weights
    expected = np.full((2, 3), 1 / 3)  # row 1: an all-zero product gives the uniform distribution
    expected[0] = product[0] / product[0].sum()
    np.testing.assert_allclose(np.asarray(ier.guided_audio_distribution(logits, weights)), expected, rtol=1e-6)
    unguided = _sigmoid(logits) / _sigmoid(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(ier.guided_audio_distribution(logits)), unguided, rtol=1e-6)
    p = _softmax(RNG.normal(size=(4, 5)))
    q = _softmax(RNG.normal(size=(4, 5)))
    expected = (p * np.log(p / q)).sum(axis=1) + (q * np.log(q / p)).sum(axis=1)
    np.testing.assert_allclose(np.asarray(ier.symmetric_kl(p.astype("float32"), np.log(q).astype("float32"))),
                               expected, rtol=1e-4)


def test_stage_two_loss_is_the_symmetric_kl_plus_half_the_location_bce():
    image_maps = RNG.normal(size=(3, 4, 4, 6)).astype("float32")
    audio = RNG.normal(size=(3, 6)).astype("float32")
    class_maps = RNG.uniform(0, 1, size=(3, 4, 4, 5)).astype("float32")
    target = _softmax(RNG.normal(size=(3, 5))).astype("float32")
    w, gamma = 5.0, 4.0

    def maps(images, sounds):
        return _sigmoid(w * np.einsum("bhwd,bd->bhw", _unit(images), _unit(sounds)))

    positive = maps(image_maps, audio)
    negative = maps(np.roll(image_maps, -1, axis=0), audio)  # clip i's audio with clip i+1's image
    pooled = np.stack([negative[:, r, c].max(axis=(1, 2)) for r in (slice(0, 2), slice(2, 4))
                       for c in (slice(0, 2), slice(2, 4))], axis=1)
    location = 0.5 * (-np.log(positive.max(axis=(1, 2))).mean() - np.log(1 - pooled).mean())
    q = _softmax(gamma * class_maps.mean(axis=(1, 2)))
    kl = ((target * np.log(target / q)).sum(axis=1) + (q * np.log(q / target)).sum(axis=1)).mean()
    terms = ier.ier_stage_two_loss_terms(image_maps, audio, w, class_maps, target, gamma, 0.5)
    np.testing.assert_allclose(float(terms["location"]), location, rtol=1e-4)
    np.testing.assert_allclose(float(terms["kl"]), kl, rtol=1e-4)
    np.testing.assert_allclose(float(terms["loss"]), kl + 0.5 * location, rtol=1e-4)


def test_the_referrer_learns_to_drop_an_off_screen_class_and_a_silent_visible_object():
    """Synthetic scenes: class 0 visible and sounding, class 1 visible and silent, class 2 heard off screen.
    Learnable: the visual projection, each clip's audio embedding and the per-class steps."""
    import tensorflow as tf

    side, channels, dim, batch = 4, 6, 6, 8
    rng = np.random.default_rng(3)
    features = np.abs(rng.normal(scale=0.01, size=(batch, side, side, channels))).astype("float32")
    features[..., 5] += 1.0                     # background
    features[:, :2, :2, :] = 0.02
    features[:, :2, :2, 0] = 1.0                # the sounding object (class 0)
    features[:, 2:, 2:, :] = 0.02
    features[:, 2:, 2:, 1] = 1.0                # the silent object (class 1)
    dictionary = np.eye(3, channels, dtype="float32")
    presence = np.tile(np.array([[4.0, -4.0, 4.0]], "float32"), (batch, 1))  # heard: classes 0 and 2
    prototype = np.asarray(ier.prototype_maps(features, dictionary, 10.0))
    weights = np.asarray(ier.visual_mask_weights(prototype, "image_max", 0.5))
    target = np.asarray(ier.guided_audio_distribution(presence, weights))
    unguided = np.asarray(ier.guided_audio_distribution(presence))
    assert target[:, 2].max() < 1e-6 and unguided[:, 2].min() > 0.45  # the off-screen filter drops class 2

    visual = tf.Variable(np.eye(channels, dim, dtype="float32") + rng.normal(scale=0.1, size=(channels, dim)).astype("float32"))
    audio = tf.Variable(rng.normal(size=(batch, dim)).astype("float32"))
    steps = tf.Variable(np.zeros((3, dim), "float32"))
    variables = [visual, audio, steps]

    def referred():
        image_maps = tf.einsum("bhwc,cd->bhwd", features, visual)
        expanded = ier.class_expanded_features(audio, tf.tile(steps[None], [batch, 1, 1]))
        class_maps = tf.sigmoid(ier.class_av_logits(image_maps, expanded, 5.0)) * prototype
        return image_maps, class_maps

    def q_of(class_maps):
        return tf.nn.softmax(10.0 * tf.reduce_mean(class_maps, axis=(1, 2)), axis=-1).numpy()

    before = q_of(referred()[1])
    optimizer = tf.keras.optimizers.Adam(0.05)
    for _ in range(300):
        with tf.GradientTape() as tape:
            image_maps, class_maps = referred()
            loss = ier.ier_stage_two_loss_terms(image_maps, audio, 5.0, class_maps, target, 10.0, 0.0)["loss"]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    after = q_of(referred()[1])
    assert before[:, 1].mean() > 0.3            # untrained: the silent object looks as present as the sounding one
    assert after[:, 1].max() < 0.1 and after[:, 2].max() < 0.1 and after[:, 0].min() > 0.8
    class_maps = referred()[1].numpy()
    assert class_maps[:, 2:, 2:, 1].mean() < 0.3 * class_maps[:, :2, :2, 0].mean()  # the silent object's map fades


# ---- the models ------------------------------------------------------------------------------------
def _tiny(**extra):
    return dict(num_clusters=3, embed_dim=8, backbone_kwargs={"width": 8}, step_hidden=(16, 8), **extra)


def test_distinguishing_step_shapes_and_a_class_step_with_mixtures():
    import tensorflow as tf

    model = ier.IErStageOne(**_tiny(), class_passes=1, mix_level_db=0.0)
    model.compile()
    x = {"image": RNG.normal(size=(4, 64, 64, 3)).astype("float32"),
         "audio": RNG.uniform(-80, 0, size=(4, 101, 64, 1)).astype("float32")}
    mid, top = model.audio_taps(x["audio"])
    assert mid.shape == (4, 32) and top.shape == (4, 64)  # layer3 and layer4 of a width-8 ResNet-18
    audio_vecs, expanded = model.expanded_audio(model.audio_taps, model.audio_head, model.step_network, x["audio"],
                                                False)
    assert tuple(expanded.shape) == (4, 3, 8)
    np.testing.assert_allclose(np.asarray(expanded), np.repeat(np.asarray(audio_vecs)[:, None], 3, axis=1))  # zero init
    model.audio_prototypes.assign(RNG.normal(size=(3, 8)).astype("float32"))
    model.reset_class_heads(0)
    labels = np.array([0, 1, 2, -1])
    # The AII term of a step: BCE of the presence logits of the mixed log-mels against the union of the labels,
    # over the rows whose members all have a label (3 sources: only row 0 = clips 0, 1, 2).
    for sources, members, valid in ((1, [[0], [1], [2], [-1]], [1, 1, 1, 0]),
                                    (3, [[0, 1, 2], [1, 2, -1], [2, -1, 0], [-1, 0, 1]], [1, 0, 0, 0])):
        mixed = x["audio"] if sources == 1 else np.asarray(ier.mix_logmels(x["audio"], sources, np.zeros((4, 4))))
        logits = np.asarray(model.presence_logits(mixed, training=True), np.float64)
        targets = np.array([[float(c in row) for c in range(3)] for row in members])
        p = _sigmoid(logits)
        bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean(axis=1)
        terms = model.class_step_loss_terms(x, tf.constant(labels), sources=tf.constant(sources))
        np.testing.assert_allclose(float(terms["aii_loss"]), bce[np.array(valid, bool)].mean(), rtol=1e-4)
        np.testing.assert_allclose(float(terms["step_loss"]), float(terms["class_loss"]) + float(terms["aii_loss"]),
                                   rtol=1e-5)
    before = [np.array(v) for v in model.step_network.trainable_variables]
    model.class_step(x, tf.constant(labels), sources=tf.constant(3))
    assert any(np.abs(np.array(v) - b).max() > 0 for v, b in zip(model.step_network.trainable_variables, before))


def test_after_clustering_sets_prototypes_and_the_curriculum_and_keeps_the_cluster_numbering():
    model = ier.IErStageOne(**_tiny(), curriculum_epochs=3)
    audio = _unit(RNG.normal(size=(6, 8))).astype("float32")
    labels = np.array([0, 0, 2, 2, 2, 0])  # cluster 1 is empty
    model.clusterings.assign(2.0)  # the callback counts this clustering before the hook: the second one
    logs = model.after_clustering(labels, {"audio": audio}, epoch=4)
    prototypes = np.asarray(model.audio_prototypes)
    np.testing.assert_allclose(prototypes[0], audio[[0, 1, 5]].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(prototypes[2], audio[[2, 3, 4]].mean(axis=0), rtol=1e-6)
    assert not prototypes[1].any() and logs == {"mix_proportion": 0.7, "mix_sources": 3.0}

    dictionary = RNG.uniform(size=(3, 64)).astype("float32")
    fresh = ier.IErStageOne(**_tiny())
    same = fresh.align_clusters(labels, dictionary, np.array([3, 0, 3]))
    assert same[0] is labels  # no dictionary yet: k-means' numbering stands
    fresh.dictionary.assign(dictionary)
    permutation = np.array([2, 0, 1])  # new cluster n is old entry permutation[n]
    aligned_labels, aligned, sizes = fresh.align_clusters(labels, dictionary[permutation] * 1.1, np.array([3, 0, 3]))
    np.testing.assert_allclose(aligned, dictionary * 1.1, rtol=1e-6)
    assert aligned_labels.tolist() == permutation[labels].tolist() and sizes.tolist() == [0, 3, 3]


def test_stage_two_saves_and_reloads_exactly_in_bf16(tmp_path):
    from keras_avloc.models import load_model

    stage_one = ier.IErStageOne(**_tiny())
    stage_one.clusterings.assign(1.0)
    stage_one.dictionary.assign(RNG.uniform(size=(3, 64)).astype("float32"))
    stage_one.audio_prototypes.assign(RNG.normal(size=(3, 8)).astype("float32"))
    model = ier.IErStageTwo(**_tiny(), mask_variant="batch_mean", dtype="mixed_bfloat16")
    model.initialize_from(stage_one)
    np.testing.assert_array_equal(np.asarray(model.audio_prototypes), np.asarray(stage_one.audio_prototypes))
    images = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    audio = RNG.uniform(-80, 0, size=(2, 101, 64, 1)).astype("float32")
    path = str(tmp_path / "ier2.keras")
    model.save(path)
    again = load_model(path)
    assert again.dtype_policy.name == "mixed_bfloat16" and again.mask_variant == "batch_mean"
    np.testing.assert_array_equal(again.localize_classes(images, audio, (32, 32)),
                                  model.localize_classes(images, audio, (32, 32)))
    maps = model.localize_classes(images, audio, (32, 32), silent_filter=False, offscreen_filter=False)
    assert maps.shape == (2, 3, 32, 32) and 0.0 <= maps.min() and maps.max() <= 1.0
    np.testing.assert_array_equal(again.localize(images, audio), model.localize(images, audio))
    with pytest.raises(ValueError, match="not clustered"):
        ier.IErStageTwo(**_tiny()).initialize_from(ier.IErStageOne(**_tiny()))
    with pytest.raises(ValueError, match="mask_variant"):
        ier.IErStageTwo(**_tiny(), mask_variant="median")


# ---- interference scenes and the two-stage run -------------------------------------------------------
CLASSES = STAMPS_CLASSES


@pytest.fixture(scope="session")  # session: the `long` tests run first, away from the rest of the module
def ier_data(tmp_path_factory):
    return build_tiny_stamps(tmp_path_factory, "ier_stamps", n_train_mosaic=4, n_val_interf=7, n_test_interf=14)


def test_interference_scenes_carry_their_scenario_with_exact_levels(ier_data):
    import soundfile

    with open(os.path.join(ier_data, "test_interf.json")) as handle:
        records = json.load(handle)
    assert [r["scenario"] for r in records] == list(stamps_module.INTERFERENCE_SCENARIOS) * 2
    for number, record in enumerate(records):
        scenario, info = record["scenario"], record["interference"]
        objects = record["objects"]
        sounding = [o["class"] for o in objects if o["sounding"]]
        silent = [o["class"] for o in objects if not o["sounding"]]
        offscreen = [s["class"] for s in record["sources"] if s.get("offscreen")]
        assert sorted(silent) == sorted(info["silent"]) and offscreen == info["offscreen"] and set(silent) <= set(CLASSES)
        assert not set(offscreen) & {o["class"] for o in objects}  # heard, not seen
        expected = {"offscreen": (1, 1, 0), "silent": (1, 0, (1, 2)), "combined": (2, 1, 1)}.get(scenario, (2, 0, 0))
        assert len(sounding) == expected[0] and len(offscreen) == expected[1]
        assert len(silent) in (expected[2] if isinstance(expected[2], tuple) else (expected[2],))
        if len(sounding) == 2:
            first, second = (soundfile.read(os.path.join(ier_data, s["audio"]))[0] for s in record["sources"][:2])
            level = 20 * np.log10(np.sqrt(np.mean(second ** 2)) / np.sqrt(np.mean(first ** 2)))
            np.testing.assert_allclose(level, info["level_db"], atol=0.05)
            if scenario == "combined":  # the off-screen source at 0 dB relative to the first
                first, third = (soundfile.read(os.path.join(ier_data, record["sources"][n]["audio"]))[0] for n in (0, 2))
                np.testing.assert_allclose(20 * np.log10(np.sqrt(np.mean(third ** 2) / np.mean(first ** 2))), 0.0,
                                           atol=0.05)
            if scenario.startswith("volume_"):
                assert abs(info["level_db"]) == float(scenario[7:-2])
                if info["level_db"]:
                    assert (info["level_db"] > 0) == (number < 7)  # the sign alternates by block of seven


@pytest.mark.long
def test_two_stages_train_resume_and_score_the_interference_protocol(ier_data, tmp_path):
    from keras_avloc.cli import main
    from keras_avloc.evaluation.classes import evaluate_interference, interference_table
    from keras_avloc.models import load_model
    from keras_avloc.training import train

    tiny = {"backbone_kwargs": {"width": 8}, "num_clusters": 4, "embed_dim": 16, "class_passes": 1,
            "kmeans_restarts": 2, "step_hidden": [16, 16], "curriculum_epochs": 2}
    stage_one_dir = str(tmp_path / "ier1")
    model, history = train("ier", ier_data, stage_one_dir, epochs=2, batch_size=4, image_size=64, model_kwargs=tiny,
                           verbose=0, seed=1)
    assert np.isnan(history.history["mix_proportion"][0])  # the warm-up epoch does not cluster
    assert history.history["mix_proportion"][1] == 0.5 and history.history["mix_sources"][1] == 2.0
    assert np.isfinite(history.history["aii_loss"][1]) and np.abs(np.asarray(model.audio_prototypes)).sum() > 0
    from keras_avloc.training.callbacks import tensorboard_available

    if tensorboard_available():  # the curriculum's p and n reach TensorBoard
        import glob

        import tensorflow as tf

        tags = {value.tag for path in glob.glob(os.path.join(stage_one_dir, "logs", "train", "*"))
                for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
        assert {"epoch_mix_proportion", "epoch_mix_sources", "epoch_aii_loss"} <= tags
    _, more = train("ier", ier_data, stage_one_dir, epochs=3, batch_size=4, image_size=64, model_kwargs=tiny,
                    verbose=0, seed=1)
    assert more.history["mix_proportion"] == [0.9] and more.history["mix_sources"] == [4.0]  # resumed at epoch 3

    stage_two_dir = str(tmp_path / "ier2")
    stage_two, _ = train("ier-stage2", ier_data, stage_two_dir, epochs=1, batch_size=2, image_size=64,
                         init_from=os.path.join(stage_one_dir, "model.keras"), verbose=0, seed=1,
                         model_kwargs={"mask_variant": "gap"})
    assert stage_two.num_clusters == 4 and stage_two.step_hidden == (16, 16)  # inherited from stage one
    metrics = evaluate_interference(load_model(os.path.join(stage_two_dir, "model.keras")), ier_data, "test_interf",
                                    assign_split="val", progress=False)
    assert sorted(metrics["groups"]) == sorted(stamps_module.INTERFERENCE_SCENARIOS)
    assert all(group["model"]["samples"] == 2 for group in metrics["groups"].values())
    assert np.isnan(metrics["groups"]["volume_6db"]["model"]["offscreen_nsa"])
    assert 0.0 <= metrics["groups"]["offscreen"]["model"]["offscreen_nsa"] <= 1.0
    assert 0.0 <= metrics["groups"]["silent"]["center"]["nsa"] <= 1.0 and "combined" in interference_table(metrics)

    from keras_avloc.models import AVGN

    conditioned = AVGN(class_names=CLASSES, embed_dim=16, depth=1, num_heads=4, backbone_kwargs={"width": 8})
    conditioned_metrics = evaluate_interference(conditioned, ier_data, "test_interf", progress=False)
    assert conditioned_metrics["maps"] == "class-conditioned maps"  # off-screen classes get their own maps too
    assert 0.0 <= conditioned_metrics["groups"]["offscreen"]["model"]["offscreen_nsa"] <= 1.0

    out = str(tmp_path / "cli_eval")
    assert main(["evaluate", "--checkpoint", os.path.join(stage_two_dir, "model.keras"), "--data", ier_data,
                 "--protocol", "stamps-interference", "--no-offscreen-filter", "--mask-variant", "fixed",
                 "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "metrics.json")) as handle:
        saved = json.load(handle)
    assert saved["protocol"] == "stamps-interference" and saved["split"] == "test_interf"
    assert main(["evaluate", "--checkpoint", os.path.join(stage_one_dir, "model.keras"), "--data", ier_data,
                 "--protocol", "stamps-interference", "--no-silent-filter", "--out", str(tmp_path / "bad"),
                 "--no-progress"]) == 2  # the filters belong to stage two


def test_stage_one_can_continue_a_csol_stage_one():
    from keras_avloc.models import csol
    from keras_avloc.training.train import _initial_model

    source = csol.CSOLStageOne(num_clusters=3, embed_dim=8, backbone_kwargs={"width": 8})
    source.dictionary.assign(RNG.normal(size=(3, 64)).astype("float32"))
    source.av_scale.assign(7.5)
    model = ier.IErStageOne(**_tiny())
    model.initialize_from(source)
    assert float(model.av_scale) == 7.5
    np.testing.assert_array_equal(np.asarray(model.dictionary), np.asarray(source.dictionary))
    for mine, theirs in zip(model.audio_taps.get_weights(), source.audio_backbone.get_weights()):
        np.testing.assert_array_equal(mine, theirs)  # the taps share the copied audio backbone
    assert _initial_model(ier.IErStageOne, "ier", None) is None  # the CSOL start is optional
    with pytest.raises(ValueError, match="CSOLStageOne"):
        model.initialize_from(ier.IErStageTwo(**_tiny()))


def test_bad_interference_records_and_too_few_classes_get_clear_errors(tmp_path):
    from keras_avloc.data import load_split
    from keras_avloc.data.annotations import AnnotationError, write_split

    entry = {"file": "a", "class": "cow", "bbox": [], "kind": "interference", "scenario": "silent"}
    for bad, message in (({"level_db": "loud"}, "level_db"), ({"offscreen": "pig"}, "offscreen"), ([1], "object")):
        (tmp_path / "test_interf.json").write_text(json.dumps([dict(entry, interference=bad)]))
        with pytest.raises(AnnotationError, match=f"test_interf.json entry 0.*{message}"):
            load_split(str(tmp_path), "test_interf")
    good = dict(entry, interference={"level_db": -6, "silent": ["dog"]},
                sources=[{"class": "pig", "bbox": [], "audio": "audio/a_s0.wav", "offscreen": True}])
    (tmp_path / "test_interf.json").write_text(json.dumps([good]))
    record = load_split(str(tmp_path), "test_interf")[0]
    assert record["scenario"] == "silent" and record["interference"] == {"level_db": -6.0, "offscreen": [], "silent": ["dog"]}
    assert record["sources"][0]["offscreen"] is True
    write_split([record], str(tmp_path / "copy.json"))  # a round trip keeps the interference fields
    again = load_split(str(tmp_path), "copy")[0]
    assert again["scenario"] == "silent" and again["interference"] == record["interference"]
    assert again["sources"][0]["offscreen"] is True
    (tmp_path / "test_interf.json").write_text(json.dumps([dict(good, sources=[dict(good["sources"][0], offscreen="no")])]))
    with pytest.raises(AnnotationError, match="'offscreen' must be true or false"):
        load_split(str(tmp_path), "test_interf")
    with pytest.raises(stamps_module.StampsError, match="interference"):
        stamps_module.build_stamps(str(tmp_path / "three"), n_train=0, n_val=0, n_test=0, n_test_mix=0, n_test_ext=0,
                                   n_test_interf=7, classes=STAMPS_CLASSES[:3], progress=False)
