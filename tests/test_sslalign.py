"""SSL-Align: the objective against an independent numpy transcription of the formulas in the docstring of
keras_avloc/models/sslalign.py (loops, no shared helpers), the in-batch neighbours, the in-graph views, the frozen
neighbour encoder, and the released checkpoints' layout written by torch."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import keras  # noqa: E402

from keras_avloc.cli import main as avloc_main  # noqa: E402
from keras_avloc.models import build_model  # noqa: E402
from keras_avloc.models.sslalign import SSLAlign, augment_views, batch_neighbours, sslalign_loss_terms  # noqa: E402

TOLERANCE = 1e-4


def _unit(x):
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True))


def _reference(image_views, audio_views, positives, tau, weight, localization_pooling, alignment_pooling, pooling_tau):
    """The objective written out clip by clip: s_L, s_A, the multi-positive InfoNCE both ways, averaged over the
    view pairs."""
    batch = image_views[0].shape[0]

    def nce(scores):
        total = 0.0
        for n in range(batch):  # rows: image n against every audio
            row = scores[n] - np.log(np.sum(np.exp(scores[n])))
            total += -sum(row[m] for m in range(batch) if positives[n, m]) / positives[n].sum() / batch
        for m in range(batch):  # columns: audio m against every image
            column = scores[:, m] - np.log(np.sum(np.exp(scores[:, m])))
            total += -sum(column[n] for n in range(batch) if positives[n, m]) / positives[:, m].sum() / batch
        return total

    localization, alignment = [], []
    for images in image_views:
        for audio in audio_views:
            s_l, s_a = np.zeros((batch, batch)), np.zeros((batch, batch))
            for n in range(batch):
                locations = _unit(images[n].reshape(-1, images.shape[-1]).astype(np.float64))
                for m in range(batch):
                    a = _unit(audio[m].astype(np.float64))
                    cosines = locations @ a
                    w = np.exp(cosines / pooling_tau) / np.sum(np.exp(cosines / pooling_tau))
                    s_l[n, m] = cosines.max() if localization_pooling == "max" else np.sum(w * cosines)
                    pooled = locations.mean(axis=0) if alignment_pooling == "mean" else w @ locations
                    s_a[n, m] = _unit(pooled) @ a
            localization.append(nce(s_l / tau))
            alignment.append(nce(s_a / tau))
    return np.mean(localization) + weight * np.mean(alignment), np.mean(localization), np.mean(alignment)


@pytest.mark.parametrize("localization_pooling,alignment_pooling", [("max", "mean"), ("softmax", "attention")])
def test_objective_equals_the_formula(localization_pooling, alignment_pooling):
    rng = np.random.default_rng(0)
    image_views = [rng.normal(size=(5, 3, 4, 8)).astype(np.float32) for _ in range(2)]
    audio_views = [rng.normal(size=(5, 8)).astype(np.float32) for _ in range(2)]
    positives = np.eye(5)
    positives[0, 3] = positives[3, 0] = positives[1, 2] = 1  # neighbour pairs; column 2 has two positives
    terms = sslalign_loss_terms(image_views, audio_views, positives.astype(np.float32), tau=0.1, alignment_weight=0.5,
                                localization_pooling=localization_pooling, alignment_pooling=alignment_pooling,
                                pooling_tau=0.2)
    loss, localization, alignment = _reference(image_views, audio_views, positives, 0.1, 0.5, localization_pooling,
                                               alignment_pooling, 0.2)
    np.testing.assert_allclose(float(terms["loss"]), loss, rtol=TOLERANCE)
    np.testing.assert_allclose(float(terms["localization"]), localization, rtol=TOLERANCE)
    np.testing.assert_allclose(float(terms["alignment"]), alignment, rtol=TOLERANCE)


@pytest.mark.parametrize("count", [1, 2])
def test_neighbours_are_the_nearest_other_clips_both_ways(count):
    # clip 3's nearest is clip 2, whose nearest is clip 1: a one-sided pair that only symmetrisation adds both ways
    embeddings = np.array([[1.0, 0.0], [0.8, 0.6], [0.5, 0.87], [0.0, 1.0], [-1.0, -0.1]], np.float32)
    mask = np.asarray(batch_neighbours(embeddings, count))
    unit = _unit(embeddings)
    similarity = unit @ unit.T - 10 * np.eye(5)
    expected = np.eye(5)
    for n in range(5):
        for m in np.argsort(-similarity[n])[:count]:
            expected[n, m] = expected[m, n] = 1
    assert expected[2, 3] == 1 and np.argsort(-similarity[2])[0] != 3  # the case above is in the test
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_array_equal(np.asarray(batch_neighbours(embeddings, 0)), np.eye(5))
    np.testing.assert_array_equal(np.asarray(batch_neighbours(embeddings[:1], count)), np.eye(1))  # a batch of one


def test_views_crop_flip_jitter_and_mask():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(8, 32, 32, 3)).astype(np.float32)
    audio = rng.normal(size=(8, 40, 50, 1)).astype(np.float32)
    # no zoom, no jitter: each view is the frame or its mirror image
    views, _ = augment_views(images, audio, keras.random.SeedGenerator(0), crop_scale=(1.0, 1.0), jitter=0.0)
    views = np.asarray(views)
    mirrored = [np.allclose(v, x[:, ::-1], atol=1e-4) for v, x in zip(views, images)]
    kept = [np.allclose(v, x, atol=1e-4) for v, x in zip(views, images)]
    assert all(m or k for m, k in zip(mirrored, kept)) and any(mirrored) and any(kept)
    views, heard = augment_views(images, audio, keras.random.SeedGenerator(0))
    assert views.shape == images.shape and not np.allclose(np.asarray(views), images)
    heard = np.asarray(heard)
    masked = [(~np.isclose(c, o)).all(axis=0).any() and (~np.isclose(c, o)).all(axis=1).any()
              for c, o in zip(heard, audio)]
    assert any(masked)  # some clip lost a time frame and a frequency bin
    for clip, original in zip(heard, audio):
        changed = ~np.isclose(clip, original)
        assert np.allclose(clip[changed], original.mean(), atol=1e-5)  # masked cells take the clip's mean
        frames, bins = changed.all(axis=0)[:, 0], changed.all(axis=1)[:, 0]  # fully masked time frames / bins
        assert frames.mean() <= 0.2 and bins.mean() <= 0.2
        assert np.array_equal(changed[..., 0], frames[None, :] | bins[:, None])  # nothing else changed


def _batch(size=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.normal(size=(size, 48, 48, 3)).astype(np.float32),
            "audio": rng.normal(size=(size, 65, 41, 1)).astype(np.float32)}


def test_frozen_neighbour_encoder_is_copied_once_never_trained_and_saved(tmp_path):
    from keras_avloc.models import load_model

    assert not hasattr(build_model("sslalign", backbone_kwargs={"width": 8}), "prior_image_encoder")  # default: off
    model = build_model("sslalign", backbone_kwargs={"width": 8}, neighbours=1)
    model.compile()
    assert len(model.trainable_weights) == len(model.image_backbone.trainable_weights) + len(
        model.audio_encoder.trainable_weights)
    start = [np.array(w) for w in model.image_backbone.weights]
    model.fit(_batch(), epochs=2, batch_size=4, verbose=0)
    prior = [np.array(w) for w in model.prior_image_encoder.weights]
    for before, copied in zip(start, prior):
        np.testing.assert_array_equal(before, copied)
    moved = max(float(np.max(np.abs(np.array(w) - b))) for w, b in zip(model.image_backbone.weights, start))
    assert moved > 0 and float(model.prior_copied.numpy()) == 1.0
    model.save(tmp_path / "model.keras")
    loaded = load_model(str(tmp_path / "model.keras"))
    assert float(loaded.prior_copied.numpy()) == 1.0
    for kept, copied in zip(loaded.prior_image_encoder.weights, prior):
        np.testing.assert_array_equal(np.array(kept), copied)


def test_training_step_uses_two_views_and_the_neighbours(monkeypatch):
    import keras_avloc.models.sslalign as module

    seen = {}
    original = module.sslalign_loss_terms

    def spy(image_views, audio_views, positives=None, **kwargs):
        seen.update(views=len(image_views), positives=positives)
        return original(image_views, audio_views, positives, **kwargs)

    monkeypatch.setattr(module, "sslalign_loss_terms", spy)
    model = build_model("sslalign", backbone_kwargs={"width": 8}, neighbours=1, neighbour_source="live")
    terms = model.compute_batch_terms(_batch(), None, training=True)
    assert seen["views"] == 2 and float(np.sum(np.asarray(seen["positives"]))) > 4
    assert set(model.loss_term_names) <= set(terms)
    model.compute_batch_terms(_batch(3), None, training=False)  # validation: one view, no neighbours
    assert seen["views"] == 1 and seen["positives"] is None


def test_bad_settings_name_the_choices():
    with pytest.raises(ValueError, match="neighbour_source"):
        SSLAlign(neighbour_source="dataset")
    with pytest.raises(ValueError, match="localization_pooling"):
        SSLAlign(localization_pooling="mean")
    with pytest.raises(ValueError, match="views"):
        SSLAlign(views=0)


def test_released_checkpoint_layout_ports_and_matches_the_torch_network(tmp_path, capsys):
    """A `.pth.tar` in the released layout ({"model_state_dict": {"imgnet.*", "audnet.*"}}, the LVS-style nets with
    their unused stems and classifier, random weights, width 8) plus a key the inference network does not have,
    written by torch: the port reports the extra key and its maps equal the cosine map of the torch networks."""
    torch = pytest.importorskip("torch")
    from keras_avloc.backbones import torch_reference
    from keras_avloc.models import load_model

    imgnet = torch_reference.TorchResNet18(input_channels=3, layer4_stride=1, width=8, lvs_modal="vision")
    audnet = torch_reference.TorchResNet18(input_channels=1, layer4_stride=1, width=8, lvs_modal="audio")
    torch_reference.randomize_(imgnet, seed=1)
    torch_reference.randomize_(audnet, seed=2)
    state = {f"{name}.{key}": value for name, module in (("imgnet", imgnet), ("audnet", audnet))
             for key, value in module.state_dict().items()}
    state["align_head.weight"] = torch.zeros(4, 64)
    path = tmp_path / "ours_sup.pth.tar"
    torch.save({"model_state_dict": state, "epoch": 20}, path)
    out = tmp_path / "model.keras"
    assert avloc_main(["port-weights", str(path), str(out), "--method", "sslalign"]) == 0
    printed = capsys.readouterr().out
    assert "align_head.weight" in printed
    model = load_model(str(out))
    assert model.name == "sslalign" and model.eval_settings["strict_median"] is True

    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    audio = rng.normal(size=(2, 97, 61, 1)).astype(np.float32)
    imgnet.eval()
    audnet.eval()
    with torch.no_grad():
        image = torch.nn.functional.normalize(imgnet(torch.from_numpy(images).permute(0, 3, 1, 2)), dim=1)
        sound = audnet(torch.from_numpy(audio).permute(0, 3, 1, 2)).amax(dim=(2, 3))
        expected = torch.einsum("nchw,nc->nhw", image, torch.nn.functional.normalize(sound, dim=1)).numpy()
    features = model({"image": images, "audio": audio}, training=False)
    maps = np.asarray(model.similarity_map(features["image_maps"], features["audio_vecs"]))
    np.testing.assert_allclose(maps, expected, atol=TOLERANCE)
