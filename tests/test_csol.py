"""CSOL: both stages' losses against numpy references of the published formulas, the dictionary and pseudo-labels,
the cluster assignment, the class-aware metric, the stamps mosaic / duet scenes, and the two-stage run with
`train` and `evaluate_classes` on a tiny real-media build.

The numpy references below are written from the formulas in the paper / official scripts (torch BCELoss,
KLDivLoss with reduction "mean", AdaptiveMaxPool2d bins, the loop-based dilation of `extract_feature`,
`eval.py`'s cIoU), not from keras_avloc's code.
"""

import itertools
import json
import os

import numpy as np
import pytest

from keras_avloc.metrics import match_clusters, ratio_ciou
from keras_avloc.models import csol
from tiny_av_data import STAMPS_CLASSES, build_tiny_stamps

RNG = np.random.default_rng(11)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _cosine_maps(image_maps, audio_vecs):
    v = image_maps / np.linalg.norm(image_maps, axis=-1, keepdims=True)
    a = audio_vecs / np.linalg.norm(audio_vecs, axis=-1, keepdims=True)
    return np.einsum("bhwd,bd->bhw", v, a)


def _bce(p, y):
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _torch_adaptive_max_2x2(m):
    """torch AdaptiveMaxPool2d((2, 2)): bin i spans [floor(i*h/2), ceil((i+1)*h/2))."""
    h, w = m.shape[1:]
    out = []
    for i in range(2):
        for j in range(2):
            r0, r1 = (i * h) // 2, -(-((i + 1) * h) // 2)
            c0, c1 = (j * w) // 2, -(-((j + 1) * w) // 2)
            out.append(m[:, r0:r1, c0:c1].max(axis=(1, 2)))
    return np.stack(out, axis=1)


def _official_dilation(mask):
    """The loops of training_stage_one.py `location_dilation` (one map [h, w])."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    for i in range(h):
        for j in range(w):
            if mask[i, j] == 1:
                out[i, j] = 1
                if 0 < i < h - 1 and 0 < j < w - 1:
                    out[i + 1, j] = out[i - 1, j] = out[i, j - 1] = out[i, j + 1] = 1
    return out


def test_stage_one_loss_matches_the_interleaved_official_batch():
    image_maps, audio = RNG.normal(size=(4, 3, 5, 6)), RNG.normal(size=(4, 6))
    w = 5.0
    terms = csol.csol_stage_one_loss_terms(image_maps, audio, w)
    # The official batch: audio i twice, with its own image (label 1) and another clip's image (label 0);
    # BCELoss(mean) over the 2B outputs max(sigmoid(w cos)).
    outputs, labels = [], []
    for i in range(4):
        for image, label in ((image_maps[i], 1.0), (image_maps[(i + 1) % 4], 0.0)):
            outputs.append(_sigmoid(w * _cosine_maps(image[None], audio[i][None])).max())
            labels.append(label)
    reference = np.mean(_bce(np.array(outputs), np.array(labels)))
    assert float(terms["loss"]) == pytest.approx(reference, rel=1e-5)
    accuracy = np.mean(np.round(outputs) == np.array(labels))
    assert float(terms["pair_accuracy"]) == pytest.approx(accuracy)


def test_class_loss_is_the_sum_of_two_cross_entropies_and_ignores_unlabelled_clips():
    image_logits, audio_logits = RNG.normal(size=(5, 4)), RNG.normal(size=(5, 4))
    labels = np.array([0, 3, -1, 2, 1])

    def ce(logits):
        keep = labels >= 0
        z = logits[keep]
        return np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), labels[keep]])

    terms = csol.csol_class_loss_terms(image_logits, audio_logits, labels)
    assert float(terms["class_loss"]) == pytest.approx(ce(image_logits) + ce(audio_logits), rel=1e-5)


def test_stage_two_loss_matches_kl_plus_half_the_location_bce():
    batch, h, w, channels, dim, clusters = 3, 5, 4, 6, 5, 4
    features = RNG.normal(size=(batch, h, w, channels))
    image_maps, audio = RNG.normal(size=(batch, h, w, dim)), RNG.normal(size=(batch, dim))
    dictionary = RNG.normal(size=(clusters, channels))
    scale, bias, av_w = 0.7, -0.2, 4.0
    teacher = RNG.normal(size=(batch, clusters))
    terms = csol.csol_stage_two_loss_terms(features, image_maps, audio, av_w, dictionary, scale, bias, teacher)

    positive = _sigmoid(av_w * _cosine_maps(image_maps, audio))
    negative = _sigmoid(av_w * _cosine_maps(np.roll(image_maps, -1, axis=0), audio))
    location = 0.5 * (np.mean(_bce(positive.max(axis=(1, 2)), 1.0)) + np.mean(_bce(_torch_adaptive_max_2x2(negative), 0.0)))
    obj = (scale * np.einsum("bhwc,kc->bkhw", features, dictionary) + bias) * positive[:, None]
    pooled = obj.mean(axis=(2, 3))
    log_q = pooled - np.log(np.exp(pooled).sum(axis=1, keepdims=True))
    p = np.exp(teacher) / np.exp(teacher).sum(axis=1, keepdims=True)
    kl = np.mean(p * (np.log(p) - log_q))  # torch KLDivLoss(log_q, p), reduction "mean": over B x K
    assert float(terms["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(terms["location"]) == pytest.approx(location, rel=1e-5)
    assert float(terms["loss"]) == pytest.approx(kl + 0.5 * location, rel=1e-5)


@pytest.mark.parametrize("shape", [(7, 7), (14, 14), (5, 3)])
def test_adaptive_pool_and_dilation_match_the_torch_and_loop_definitions(shape):
    maps = RNG.normal(size=(2,) + shape)
    np.testing.assert_allclose(np.asarray(csol.adaptive_max_pool_2x2(maps)), _torch_adaptive_max_2x2(maps), rtol=1e-6)
    masks = (RNG.random((3,) + shape) > 0.7).astype(np.float32)
    masks[0, 0, 0] = masks[0, -1, -1] = 1  # border cells: kept, but they do not spread
    dilated = np.asarray(csol.dilate_mask(masks))
    for mask, got in zip(masks, dilated):
        np.testing.assert_array_equal(got, _official_dilation(mask))
    features = RNG.normal(size=(3,) + shape + (4,))
    av = RNG.random((3,) + shape)
    expected = [(f * _official_dilation((a > 0.05).astype(np.float32))[..., None]).mean(axis=(0, 1))
                for f, a in zip(features, av)]
    np.testing.assert_allclose(np.asarray(csol.object_features(features, av)), expected, rtol=1e-5)


def test_clustering_recovers_known_clusters_and_averages_unnormalised_features():
    centres = np.eye(3, 8) * 10.0
    truth = np.repeat(np.arange(3), 20)
    scales = RNG.uniform(0.5, 3.0, size=(60, 1))  # the norm must not matter to the clustering
    features = (centres[truth] + RNG.normal(scale=0.3, size=(60, 8))) * scales
    labels, dictionary, sizes = csol.cluster_objects(features, 3, seed=0, n_init=4)
    # Same partition up to a renaming of the clusters.
    mapping = {int(t): int(labels[truth == t][0]) for t in range(3)}
    assert len(set(mapping.values())) == 3
    np.testing.assert_array_equal(labels, [mapping[int(t)] for t in truth])
    for t, k in mapping.items():
        np.testing.assert_allclose(dictionary[k], features[truth == t].mean(axis=0), rtol=1e-5)
    assert sorted(sizes.tolist()) == [20, 20, 20]
    with pytest.raises(ValueError, match="at least K"):
        csol.cluster_objects(features[:2], 3)


def test_hungarian_and_many_to_one_assignments_maximise_the_confusion():
    confusion = np.array([[0.1, 0.7, 0.2, 0.0], [0.6, 0.3, 0.0, 0.1], [0.5, 0.0, 0.3, 0.2]])
    hungarian = match_clusters(confusion)
    np.testing.assert_array_equal(np.nonzero(hungarian)[1], [1, 0, 2])  # class 2 loses cluster 0 to class 1
    many = match_clusters(confusion, "many-to-one")
    assert (many.sum(axis=0) == 1).all() and (many.sum(axis=1) >= 1).all()
    best = -1.0
    for classes in itertools.product(range(3), repeat=4):  # brute force over every cluster -> class map
        if len(set(classes)) == 3:
            best = max(best, sum(confusion[c, k] for k, c in enumerate(classes)))
    assert float((many * confusion).sum()) == pytest.approx(best)
    with pytest.raises(ValueError):
        match_clusters(confusion.T, "many-to-one")


def test_ratio_ciou_matches_the_eval_script_formula():
    maps, gts = RNG.random((5, 9, 9)), (RNG.random((5, 9, 9)) > 0.6).astype(float)
    for ratio in (0.5, 0.2):
        expected = []
        for m, g in zip(maps, gts):
            thr = ratio * np.max(m)
            expected.append(np.sum((m > thr) * (g > 0)) / (np.sum(g) + np.sum((m > thr) * (g == 0))))
        np.testing.assert_allclose(ratio_ciou(maps, gts, ratio), expected)


def test_class_maps_separate_two_sounding_objects_and_keep_the_silent_one_quiet():
    """The stage-two inference rule on hand-made features: three objects, two of them sounding."""
    h = w = 6
    channels = 3
    features = np.zeros((1, h, w, channels))
    features[0, :3, :3, 0] = 1.0  # object of cluster 0 (sounding)
    features[0, 3:, 3:, 1] = 1.0  # cluster 1 (sounding)
    features[0, :3, 3:, 2] = 1.0  # cluster 2 (visible, silent)
    dictionary = np.eye(3) * 4.0
    av_map = np.zeros((1, h, w))
    av_map[0, :3, :3] = av_map[0, 3:, 3:] = 1.0  # the sounding area
    maps = np.asarray(csol.object_maps(features, dictionary, 1.0, 0.0)) * av_map[..., None]
    maps = np.exp(3 * maps) / np.exp(3 * maps).sum(axis=-1, keepdims=True)
    assert maps[0, :3, :3, 0].min() > 0.99 and maps[0, 3:, 3:, 1].min() > 0.99
    assert maps[0, :3, 3:, 2].max() < 0.34  # silent object: no class stands out there


def test_the_stage_two_objective_learns_to_separate_two_sources_and_filter_a_silent_one():
    """A tiny stage two (learnable 1x1 projections, av scale, object scale / bias, a one-hot dictionary) trained
    with the stage-two loss on synthetic scenes: three of six classes visible in three quadrants, two sounding."""
    import tensorflow as tf

    classes, dim, side = 6, 8, 4
    rng = np.random.default_rng(0)
    quadrants = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(2, 4)), (slice(2, 4), slice(0, 2)),
                 (slice(2, 4), slice(2, 4))]

    def scenes(count, visible=None):
        features = rng.normal(scale=0.05, size=(count, side, side, classes)).astype("float32")
        audio = rng.normal(scale=0.05, size=(count, classes)).astype("float32")
        teacher = np.zeros((count, classes), "float32")
        places = []
        for n in range(count):
            shown = list(rng.choice(classes, 3, replace=False)) if visible is None else visible
            order = rng.permutation(4)
            for c, quadrant in zip(shown, order):
                features[(n,) + quadrants[quadrant] + (c,)] += 1.0
            audio[n, shown[:2]] += 1.0  # the first two sound
            teacher[n, shown[:2]] = 4.0  # the stage-one audio classifier's logits
            places.append({c: quadrants[q] for c, q in zip(shown, order)})
        return features, audio, teacher, places

    features, audio, teacher, _ = scenes(96)
    visual = tf.Variable(rng.normal(scale=0.3, size=(classes, dim)).astype("float32"))
    aural = tf.Variable(rng.normal(scale=0.3, size=(classes, dim)).astype("float32"))
    av_scale, scale, bias = tf.Variable(5.0), tf.Variable(1.0), tf.Variable(0.0)
    dictionary = tf.constant(np.eye(classes, dtype="float32"))
    variables = [visual, aural, av_scale, scale, bias]
    optimizer = tf.keras.optimizers.Adam(0.05)
    for _ in range(600):
        batch = rng.choice(96, 16, replace=False)
        with tf.GradientTape() as tape:
            image_maps = tf.einsum("bhwc,cd->bhwd", features[batch], visual)
            loss = csol.csol_stage_two_loss_terms(features[batch], image_maps, tf.matmul(audio[batch], aural),
                                                  av_scale, dictionary, scale, bias, teacher[batch])["loss"]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    test_features, test_audio, _, places = scenes(6, visible=[0, 1, 2])  # 0 and 1 sound, 2 is silent
    image_maps = tf.einsum("bhwc,cd->bhwd", test_features, visual)
    av_map = tf.sigmoid(csol.av_logits(image_maps, tf.matmul(test_audio, aural), av_scale)).numpy()
    raw = csol.object_maps(test_features, dictionary, scale, bias).numpy() * av_map[..., None]
    q = np.asarray(tf.nn.softmax(raw.mean(axis=(1, 2)), axis=-1))
    maps = np.asarray(tf.nn.softmax(3.0 * raw, axis=-1))  # the inference rule, [B, h, w, K]
    for n, place in enumerate(places):
        for c in (0, 1):  # separation: each sounding class's map is on its own object, off the other source
            assert maps[(n,) + place[c] + (c,)].mean() > 0.9 and maps[(n,) + place[1 - c] + (c,)].mean() < 0.05
        assert av_map[(n,) + place[2]].mean() < 0.5 * min(av_map[(n,) + place[c]].mean() for c in (0, 1))
        assert q[n, 2] < 0.1 and q[n, 0] > 0.25 and q[n, 1] > 0.25  # the silent class leaves the distribution
        # The per-pixel softmax over classes still gives the silent object its own class where it stands: the
        # filter silences it in the class maps only where av_map falls to about 0 (what NSA measures).
        assert maps[(n,) + place[2] + (2,)].mean() > 0.5


# ---- data and the two-stage run --------------------------------------------------------------------
CLASSES = STAMPS_CLASSES


@pytest.fixture(scope="session")  # session: the `long` tests run first, away from the rest of the module
def csol_data(tmp_path_factory):
    return build_tiny_stamps(tmp_path_factory, "csol_stamps", n_train_mosaic=4, n_test_mosaic=4, n_test_duet=4)


def test_mosaics_and_duets_list_every_object_with_its_mask(csol_data):
    import cv2

    for split, count in (("test_mosaic", 4), ("test_duet", (3, 4))):
        with open(os.path.join(csol_data, f"{split}.json")) as handle:
            records = json.load(handle)
        for record in records:
            objects = record["objects"]
            sounding = [o for o in objects if o["sounding"]]
            assert len(sounding) == 2 and {s["class"] for s in record["sources"]} == {o["class"] for o in sounding}
            assert len({o["class"] for o in objects}) == len(objects)
            assert all(o["class"] in CLASSES for o in objects)  # silent objects are of sounding classes
            assert (len(objects) == count) if isinstance(count, int) else (len(objects) in count)
            for number, item in enumerate(objects):
                mask = cv2.imread(os.path.join(csol_data, item["mask"]), cv2.IMREAD_UNCHANGED) > 127
                assert mask.any()
                if split == "test_mosaic":  # each object stays inside one quadrant
                    rows, cols = np.nonzero(mask)
                    assert rows.max() < 32 or rows.min() >= 32
                    assert cols.max() < 32 or cols.min() >= 32


@pytest.mark.long
def test_two_stages_train_repeat_bit_for_bit_resume_and_score_class_aware(csol_data, tmp_path):
    """Stage one trains twice with one seed: the augmentation (the demo's, ambience included), the shuffling, k-means
    and the class-head pass repeat exactly, the second time in a process that has already trained. Stage two then
    starts from the first run, resumes, and is scored on the class-aware protocol."""
    from keras_avloc.data.annotations import load_split
    from keras_avloc.demo import AMBIENCE, DEMO_AUGMENTATION
    from keras_avloc.evaluation.classes import evaluate_classes
    from keras_avloc.models import load_model
    from keras_avloc.training import TrainingError, train

    tiny = {"backbone_kwargs": {"width": 8}, "num_clusters": 4, "embed_dim": 16, "class_passes": 1,
            "kmeans_restarts": 2}
    augment = dict(DEMO_AUGMENTATION, **AMBIENCE)
    with pytest.raises(TrainingError, match="--init-from"):
        train("csol-stage2", csol_data, str(tmp_path / "nope"), epochs=1, batch_size=4, image_size=64)

    def stage_one(name):
        return train("csol", csol_data, str(tmp_path / name), epochs=2, batch_size=4, image_size=64, clip_seconds=0.5,
                     model_kwargs=tiny, verbose=0, seed=3, augment=augment)

    stage_one_dir = str(tmp_path / "csol1")
    model, history = stage_one("csol1")
    assert np.isnan(history.history["cluster_nmi"][0]) and np.isfinite(history.history["cluster_nmi"][1])
    saved = np.load(os.path.join(stage_one_dir, "dictionary.npz"))
    np.testing.assert_allclose(saved["dictionary"], np.asarray(model.dictionary), rtol=1e-6)
    assert saved["pseudo_labels"].shape == (16,) and set(saved["pseudo_labels"].tolist()) <= set(range(4))
    assert np.abs(saved["dictionary"]).sum() > 0
    again, again_history = stage_one("repeat")
    np.testing.assert_array_equal(np.load(str(tmp_path / "repeat" / "dictionary.npz"))["pseudo_labels"],
                                  saved["pseudo_labels"])
    np.testing.assert_array_equal(again_history.history["loss"], history.history["loss"])
    assert len(model.weights) == len(again.weights)
    for mine, repeated in zip(model.weights, again.weights):
        np.testing.assert_array_equal(np.asarray(repeated), np.asarray(mine))
    reloaded = load_model(os.path.join(stage_one_dir, "model.keras"))
    np.testing.assert_allclose(np.asarray(reloaded.dictionary), saved["dictionary"])

    stage_two_dir = str(tmp_path / "csol2")
    stage_two, _ = train("csol-stage2", csol_data, stage_two_dir, epochs=1, batch_size=2, image_size=64,
                         init_from=os.path.join(stage_one_dir, "model.keras"), verbose=0, seed=1)
    assert stage_two.num_clusters == 4 and stage_two.backbone_kwargs == {"width": 8}  # inherited from stage one
    np.testing.assert_allclose(np.asarray(stage_two.dictionary), saved["dictionary"])
    assert os.path.isfile(os.path.join(stage_two_dir, "heatmaps", "classes_epoch_001.png"))  # per-class colours
    teacher = [w for w in stage_two.teacher_head.get_weights()]
    np.testing.assert_allclose(teacher[0], reloaded.audio_class_head.get_weights()[0])  # frozen: unchanged
    # Raising --epochs continues the same run.
    _, more = train("csol-stage2", csol_data, stage_two_dir, epochs=2, batch_size=2, image_size=64,
                    init_from=os.path.join(stage_one_dir, "model.keras"), verbose=0, seed=1)
    assert len(more.history["loss"]) == 1

    metrics = evaluate_classes(load_model(os.path.join(stage_two_dir, "model.keras")), csol_data, "test_mosaic",
                               assign_split="val", progress=False, out_dir=str(tmp_path / "eval"))
    import cv2

    figure = cv2.imread(str(tmp_path / "eval" / "class_maps_0.png"))
    assert figure is not None and figure.shape[0] > 100
    with open(tmp_path / "eval" / "metrics.json") as handle:
        assert json.load(handle)["model"]["samples"] == 4
    assert metrics["model"]["samples"] == 4 and metrics["center"]["samples"] == 4
    assert 0.0 <= metrics["model"]["class_ciou_auc"] <= 1.0 and 0.0 <= metrics["model"]["nsa"] <= 1.0
    assert metrics["assignment"]["clips"] == len(load_split(csol_data, "val"))
    by_visual = evaluate_classes(load_model(os.path.join(stage_two_dir, "model.keras")), csol_data, "test_duet",
                                assign_split="val", progress=False, assign_by="visual")
    assert by_visual["assignment"]["by"] == "visual" and by_visual["model"]["samples"] == 4
    agnostic = evaluate_classes(reloaded, csol_data, "test_duet", progress=False)
    assert agnostic["maps"] == "one class-agnostic map for every class" and agnostic["model"]["samples"] == 4


def test_stage_two_saves_and_reloads_exactly_in_bf16(tmp_path):
    from keras_avloc.models import load_model

    stage_one = csol.CSOLStageOne(num_clusters=3, embed_dim=8, backbone_kwargs={"width": 8})
    stage_one.clusterings.assign(1.0)
    stage_one.dictionary.assign(RNG.normal(size=(3, 64)).astype("float32"))
    model = csol.CSOLStageTwo(num_clusters=3, embed_dim=8, backbone_kwargs={"width": 8}, dtype="mixed_bfloat16")
    model.initialize_from(stage_one)
    images = RNG.normal(size=(2, 64, 64, 3)).astype("float32")
    audio = RNG.normal(size=(2, 64, 101, 1)).astype("float32")
    path = str(tmp_path / "stage_two.keras")
    model.save(path)
    again = load_model(path)
    assert again.dtype_policy.name == "mixed_bfloat16"
    np.testing.assert_array_equal(again.localize_classes(images, audio, (32, 32)), model.localize_classes(images, audio, (32, 32)))
    np.testing.assert_array_equal(again.localize(images, audio), model.localize(images, audio))
    assert model.localize_classes(images, audio, (32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="not clustered"):
        csol.CSOLStageTwo(num_clusters=3, embed_dim=8, backbone_kwargs={"width": 8}).initialize_from(
            csol.CSOLStageOne(num_clusters=3, embed_dim=8, backbone_kwargs={"width": 8}))
