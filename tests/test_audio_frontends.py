"""Spectrogram front-ends against scipy / librosa references (independent implementations)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa
import numpy as np
import pytest
import scipy.signal
import tensorflow as tf

from keras_avloc.data import audio


def _noise(shape, seed=0, scale=0.1):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _scipy_lvs(wave):
    _, _, spec = scipy.signal.spectrogram(wave, 16000, nperseg=512, noverlap=274)
    return np.log(spec + 1e-7) / 12.0


def test_lvs_spectrogram_matches_scipy_for_3_seconds():
    wave = _noise([2, 48000])
    wave[1, :8000] = 0.0  # silence exercises the 1e-7 floor
    out = audio.lvs_spectrogram(wave).numpy()
    assert out.shape == (2, 257, 200, 1)
    np.testing.assert_allclose(out[..., 0], _scipy_lvs(wave.astype(np.float64)), atol=1e-4)


def test_lvs_spectrogram_10_seconds_shape_and_values():
    wave = _noise([1, 160000], seed=1, scale=0.5) + 0.2  # DC offset: the constant detrend must remove it
    out = audio.lvs_spectrogram(wave).numpy()
    assert out.shape == (1, 257, 671, 1)
    np.testing.assert_allclose(out[0, :, :, 0], _scipy_lvs(wave[0].astype(np.float64)), atol=1e-4)


def test_tukey_window_is_scipys_default_window():
    np.testing.assert_allclose(audio.tukey_window(512, 0.25), scipy.signal.get_window(("tukey", 0.25), 512), atol=1e-12)


@pytest.mark.filterwarnings("ignore:Empty filters")
def test_mel_filterbanks_match_librosa():
    for sample_rate, n_fft, n_mels in [(16000, 160, 64), (24000, 512, 128)]:
        np.testing.assert_allclose(
            audio.mel_filterbank(sample_rate, n_fft, n_mels),
            librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels),
            atol=1e-6,
        )


@pytest.mark.filterwarnings("ignore:Empty filters")
def test_csol_logmel_matches_librosa_defaults():
    wave = _noise([2, 16000], seed=2)
    wave[1] *= np.linspace(0, 1, 16000, dtype=np.float32)  # dynamic range > 80 dB exercises top_db
    out = audio.csol_logmel(wave).numpy()
    assert out.shape == (2, 201, 64, 1)
    for example in range(2):
        mel = librosa.feature.melspectrogram(y=wave[example], sr=16000, n_fft=160, hop_length=80, n_mels=64)
        reference = librosa.power_to_db(mel)  # ref=1.0, amin=1e-10, top_db=80
        np.testing.assert_allclose(out[example, :, :, 0], reference.T, atol=1e-3)


def test_avsa_logmel_per_channel_matches_librosa():
    wave = _noise([1, 4, 24000], seed=3)
    wave[0, 2] *= 0.001  # a much quieter channel keeps its own top_db floor
    out = audio.avsa_logmel(wave).numpy()
    assert out.shape == (1, 101, 128, 4)
    for channel in range(4):
        mel = librosa.feature.melspectrogram(y=wave[0, channel], sr=24000, n_fft=512, hop_length=240, n_mels=128,
                                             power=1.0)  # the official magnitude mel
        reference = librosa.power_to_db(mel, top_db=100.0)
        np.testing.assert_allclose(out[0, :, :, channel], reference.T, atol=1e-3)


def _librosa_intensity(field):
    """Mel-band active intensity by its formula, on librosa's STFT and mel filters (independent of the TF code)."""
    spectra = np.stack([librosa.stft(channel.astype(np.float64), n_fft=512, hop_length=240, window="hann",
                                     center=True, pad_mode="constant") for channel in field])  # [4, bins, frames]
    mel = librosa.filters.mel(sr=24000, n_fft=512, n_mels=128)  # Slaney scale and norm
    active = np.real(np.conj(spectra[0])[None] * spectra[1:])  # Y, Z, X
    energy = 0.5 * np.sum(np.abs(spectra) ** 2, axis=0)
    band_energy = mel @ energy
    ratio = np.einsum("mk,ckt->ctm", mel, active) / np.where(band_energy > 0, band_energy, np.inf).T[None]
    return np.transpose(ratio, (1, 2, 0))  # [frames, 128, 3]


def test_avsa_intensity_matches_its_formula_and_points_at_a_plane_wave():
    from keras_avloc.spatial.ambisonics import foa_encode

    # two plane waves of independent noise plus a little diffuse noise; the second clip is silent for 0.2 s
    rng = np.random.default_rng(5)
    field = foa_encode(rng.standard_normal((2, 24000)) * [[0.1], [0.03]], np.array([2.4, -0.5]),
                       np.array([0.3, -0.2])) + 0.002 * rng.standard_normal((4, 24000))
    silent = field.copy()
    silent[:, :4800] = 0.0
    out = audio.avsa_intensity(np.stack([field, silent]).astype(np.float32)).numpy()
    assert out.shape == (2, 101, 128, 3)
    for example, wave in enumerate((field, silent)):
        np.testing.assert_allclose(out[example], _librosa_intensity(wave.astype(np.float32)), atol=2e-3)
    assert np.all(out[1, 2:18] == 0.0)  # silent frames (the window never reaches the sound): 0, not NaN
    # one plane wave alone: every band holds the unit vector towards it (Y, Z, X = left, up, front), at any level
    phi, nu = 2.4, 0.3
    for scale in (1.0, 0.01):
        single = (foa_encode(rng.standard_normal(24000) * 0.1 * scale, phi, nu)).astype(np.float32)
        values = audio.avsa_intensity(single[None]).numpy()[0, 5:-5]
        expected = [np.cos(nu) * np.sin(phi), np.sin(nu), np.cos(nu) * np.cos(phi)]
        np.testing.assert_allclose(values, np.broadcast_to(expected, values.shape), atol=2e-3)


def test_sphere_audio_features_stack_the_log_mels_and_the_intensity():
    from keras_avloc.models.avsa import AUDIO_INPUTS

    assert audio.SPHERE_AUDIO_INPUTS == AUDIO_INPUTS  # the data and the models agree on the channels
    wave = _noise([2, 4, 24000], seed=6)
    np.testing.assert_array_equal(audio.sphere_audio_features(wave, "ambix").numpy(), audio.avsa_logmel(wave).numpy())
    both = audio.sphere_audio_features(wave, "ambix_intensity").numpy()
    assert both.shape == (2, 101, 128, 7)
    np.testing.assert_array_equal(both[..., 4:], audio.avsa_intensity(wave).numpy())
    with pytest.raises(ValueError, match="ambix, ambix_intensity"):
        audio.sphere_audio_features(wave, "mono")


def test_frontends_run_inside_tf_data_and_tf_function():
    waves = _noise([4, 16000], seed=4)
    dataset = tf.data.Dataset.from_tensor_slices(waves).batch(2).map(audio.lvs_spectrogram)
    batches = [batch.numpy() for batch in dataset]
    assert [batch.shape for batch in batches] == [(2, 257, (16000 - 512) // 238 + 1, 1)] * 2
    compiled = tf.function(audio.csol_logmel, input_signature=[tf.TensorSpec([None, None], tf.float32)])
    assert compiled(waves).shape == (4, 201, 64, 1)
    with pytest.raises(ValueError, match="lvs"):
        audio.get_frontend("nope")
