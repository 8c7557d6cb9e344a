"""In-graph training augmentation (`keras_avloc.data.augment`) and the cached pipeline, against numpy."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_avloc.data import augment
from keras_avloc.data.augmented import mix_in_batch
from tiny_av_data import write_colour_tone_split


def _seed(a, b=0):
    return tf.constant([a, b], tf.int32)


def test_the_official_augmentation_is_an_integer_crop_and_a_flip():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(123, 123, 3)).astype(np.float32)
    official = augment.Augmentation()
    assert official.is_official and augment.get_augmentation(None) == official
    seen_flip = seen_plain = False
    for seed in range(12):
        out = augment.crop_and_flip(tf, tf.constant(image), 112, official, _seed(seed)).numpy()
        assert out.shape == (112, 112, 3)
        for candidate, flipped in ((out, False), (out[:, ::-1], True)):
            hits = [(top, left) for top in range(12) for left in range(12)
                    if np.array_equal(image[top : top + 112, left : left + 112], candidate)]
            if hits:
                seen_flip |= flipped
                seen_plain |= not flipped
                break
        else:
            raise AssertionError(f"seed {seed}: not an integer 112 x 112 crop of the frame (nor its mirror)")
    assert seen_flip and seen_plain


def test_scale_jitter_crops_are_resized_regions_of_the_frame():
    image = np.zeros((100, 100, 3), np.float32)
    image[:, 50:] = 255.0  # right half white
    jitter = augment.Augmentation(crop_scale=(0.3, 0.3), flip=False)
    means = [augment.crop_and_flip(tf, tf.constant(image), 64, jitter, _seed(s)).numpy().mean() for s in range(20)]
    # a 30-pixel crop is all black, all white or straddles the edge: the means spread out
    assert min(means) < 10 and max(means) > 245


def test_gaussian_blur_matches_an_explicit_kernel():
    rng = np.random.default_rng(1)
    image = rng.random((9, 11, 3)).astype(np.float32)
    sigma, radius = 1.2, 3
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    rows = sum(kernel[k] * padded[k : k + 9] for k in range(2 * radius + 1))
    padded = np.pad(rows, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    reference = sum(kernel[k] * padded[:, k : k + 11] for k in range(2 * radius + 1))
    np.testing.assert_allclose(augment.gaussian_blur(tf, tf.constant(image), sigma).numpy(), reference, atol=1e-5)


def test_audio_clip_centre_shift_and_speed_against_numpy():
    sample_rate, length = 100, 50
    wave = np.sin(np.arange(300) / 7.0).astype(np.float32)
    centre = augment.audio_clip(tf, tf.constant(wave), length, augment.Augmentation(), sample_rate, _seed(3)).numpy()
    np.testing.assert_array_equal(centre, wave[125:175])  # the centred clip, as the published pipelines
    fast = augment.Augmentation(speed=0.2)
    for seed in range(5):
        out = augment.audio_clip(tf, tf.constant(wave), length, fast, sample_rate, _seed(seed)).numpy()
        # some rate r in [0.8, 1.2] and start s: out[t] = interp(wave, s + r t)
        best = min(
            np.abs(np.interp((300 - length * r) / 2 + np.arange(length) * r, np.arange(300), wave) - out).max()
            for r in np.linspace(0.8, 1.2, 801))
        assert best < 2e-3
    shifted = augment.Augmentation(time_shift=0.5)
    starts = set()
    for seed in range(20):
        out = augment.audio_clip(tf, tf.constant(wave), length, shifted, sample_rate, _seed(seed)).numpy()
        matches = [s for s in range(0, 251) if np.allclose(wave[s : s + length], out, atol=1e-6)]
        assert matches and 75 <= matches[0] <= 175  # within +-0.5 s (50 samples) of the centre
        starts.add(matches[0])
    assert len(starts) > 5


def test_gain_and_noise_change_the_level_as_asked():
    wave = np.full(4000, 0.1, np.float32)
    gain = augment.Augmentation(gain_db=6.0)
    levels = [float(augment.audio_clip(tf, tf.constant(wave), 1000, gain, 1000, _seed(s)).numpy()[0]) for s in range(30)]
    assert 0.1 * 10 ** (-6 / 20) - 1e-6 <= min(levels) and max(levels) <= 0.1 * 10 ** (6 / 20) + 1e-6
    assert max(levels) / min(levels) > 1.5
    noisy = augment.Augmentation(noise_probability=1.0, noise_snr_db=(20.0, 20.0))
    out = augment.audio_clip(tf, tf.constant(wave), 4000, noisy, 1000, _seed(1)).numpy()
    noise_power = np.mean((out - 0.1) ** 2)
    assert 10 * np.log10(0.01 / noise_power) == pytest.approx(20.0, abs=0.5)


def test_ambience_adds_another_clip_of_the_batch_at_the_asked_level():
    # Distinct sinusoids: each output is its own clip plus a multiple of exactly one other clip.
    t = np.arange(2000) / 2000.0
    waves = np.stack([0.2 * (k + 1) / 6 * np.sin(2 * np.pi * (5 + 3 * k) * t) for k in range(6)]).astype(np.float32)
    ambience = augment.Augmentation(ambience_probability=1.0, ambience_snr_db=(12.0, 18.0))
    out = augment.add_ambience(tf, tf.constant(waves), ambience, _seed(4)).numpy()
    for i in range(6):
        residual = out[i] - waves[i]
        # least-squares fit of the residual on every clip: one partner, never the clip itself
        coefficients = np.linalg.lstsq(waves.T.astype(np.float64), residual.astype(np.float64), rcond=None)[0]
        partner = int(np.argmax(np.abs(coefficients)))
        assert partner != i and np.sum(np.abs(coefficients) > 1e-4) == 1
        snr = 10 * np.log10(np.mean(waves[i] ** 2) / np.mean(residual ** 2))
        assert 12.0 - 1e-3 <= snr <= 18.0 + 1e-3
    off = augment.add_ambience(tf, tf.constant(waves), augment.Augmentation(), _seed(4)).numpy()
    np.testing.assert_array_equal(off, waves)
    single = augment.add_ambience(tf, tf.constant(waves[:1]), ambience, _seed(4)).numpy()
    np.testing.assert_array_equal(single, waves[:1])  # a batch of one has no other clip


def test_spectrogram_masks_are_bands_filled_with_the_mean():
    spec = tf.constant(np.random.default_rng(2).random((4, 40, 30, 1)).astype(np.float32))
    masking = augment.Augmentation(freq_masks=1, freq_mask_width=8, time_masks=1, time_mask_width=5)
    out = augment.mask_spectrograms(tf, spec, masking, _seed(4)).numpy()
    for sample, original in zip(out, spec.numpy()):
        mean = original.mean()
        changed = ~np.isclose(sample, original)
        assert np.allclose(sample[changed], mean)
        rows = np.nonzero(np.isclose(sample[:, :, 0], mean).all(axis=1))[0]
        cols = np.nonzero(np.isclose(sample[:, :, 0], mean).all(axis=0))[0]
        assert len(rows) <= 8 and len(cols) <= 5
        if len(rows):
            assert rows.max() - rows.min() + 1 == len(rows)  # one contiguous band
    unmasked = augment.mask_spectrograms(tf, spec, augment.Augmentation(), _seed(4))
    np.testing.assert_array_equal(unmasked.numpy(), spec.numpy())


def test_frequency_masks_follow_the_front_ends_frequency_axis():
    """CSOL / AVSA log-mels are [B, frames, mels, C]: frequency masks must cover mel bands, not frames."""
    spec = tf.constant(np.random.default_rng(3).random((6, 50, 16, 1)).astype(np.float32))
    only_frequency = augment.Augmentation(freq_masks=1, freq_mask_width=6)
    out = augment.mask_spectrograms(tf, spec, only_frequency, _seed(5), frequency_axis=2).numpy()
    masked_any = False
    for sample, original in zip(out, spec.numpy()):
        changed = ~np.isclose(sample[..., 0], original[..., 0])
        bands = np.nonzero(changed.any(axis=0))[0]
        assert len(bands) <= 6 and all(changed[:, band].all() for band in bands)  # whole mel bands, every frame
        masked_any |= len(bands) > 0
    assert masked_any
    from keras_avloc.data.audio import FRONTEND_FREQUENCY_AXES

    assert FRONTEND_FREQUENCY_AXES == {"lvs": 1, "csol": 2, "avsa": 2}
    with pytest.raises(ValueError):
        augment.mask_spectrograms(tf, spec, only_frequency, _seed(5), frequency_axis=3)


def test_mixing_in_a_batch_adds_a_clip_of_another_class():
    waves = tf.constant(np.arange(5, dtype=np.float32)[:, None] * np.ones((5, 3), np.float32))
    labels = tf.constant([[0, -1], [0, -1], [1, -1], [2, -1], [1, 4]], tf.int32)  # the last is already a mixture
    mixed, pairs = mix_in_batch(tf, waves, labels, _seed(7))
    mixed, pairs = mixed.numpy(), pairs.numpy()
    for i in range(4):
        partner = int(mixed[i, 0] - i)
        assert labels.numpy()[partner, 0] != labels.numpy()[i, 0] and pairs[i, 1] == labels.numpy()[partner, 0]
        assert labels.numpy()[partner, 1] < 0  # an annotated mixture is never mixed into another
    np.testing.assert_array_equal(mixed[4], waves.numpy()[4])
    np.testing.assert_array_equal(pairs[4], [1, 4])


def test_presets_and_bad_fields():
    strong = augment.get_augmentation("strong")
    assert not strong.is_official and strong.masks_spectrogram
    assert augment.get_augmentation(strong.to_dict()) == strong
    json.dumps(strong.to_dict())
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.get_augmentation("wild")
    with pytest.raises(ValueError, match="unknown augmentation fields"):
        augment.get_augmentation({"zoom": 2})
    with pytest.raises(ValueError, match="crop_scale"):
        augment.Augmentation(crop_scale=(0.5, 1.5))


def test_cached_pipeline_trains_skips_bad_clips_and_is_reproducible(tmp_path):
    from keras_avloc.data import make_dataset

    root = tmp_path / "data"
    write_colour_tone_split(str(root), ("red", "blue", "green"), count=9, size=40, seconds=0.6)
    (root / "frames" / "clip_04.jpg").write_bytes(b"")
    kwargs = dict(training=True, batch_size=4, image_size=32, clip_seconds=0.4, seed=5, cache=True,
                  augment="strong", drop_remainder=True, progress=False, on_error="skip")
    first = [(np.asarray(x["image"]), np.asarray(x["audio"]), np.asarray(y["index"]))
             for x, y in make_dataset(str(root), "train", **kwargs)]
    dataset = make_dataset(str(root), "train", **kwargs)
    assert dataset.skipped.count == 1 and "clip_04" in next(iter(dataset.skipped.reasons))
    assert dataset.options().autotune.enabled is False  # fixed parallelism: no autotuner taking the cores
    with pytest.raises(Exception, match="clip_04"):
        make_dataset(str(root), "train", **dict(kwargs, on_error="raise"))  # the cache honours on_error too
    with pytest.raises(ValueError, match="TFRecord input trains with the official augmentation"):
        make_dataset(str(root), "train", tfrecord_dir=str(tmp_path / "shards"), **kwargs)
    second = [(np.asarray(x["image"]), np.asarray(x["audio"]), np.asarray(y["index"])) for x, y in dataset]
    assert len(first) == 2 and first[0][0].shape == (4, 32, 32, 3) and first[0][1].shape[1:] == (257, 25, 1)
    for a, b in zip(first, second):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert 4 not in np.concatenate([batch[2] for batch in first])
    mixed = make_dataset(str(root), "train", mix_sources=2, **kwargs)
    x, y = next(iter(mixed))
    labels = np.asarray(y["labels"])
    assert labels.shape == (4, 2) and np.all(labels[:, 0] != labels[:, 1])
