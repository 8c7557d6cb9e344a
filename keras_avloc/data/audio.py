"""Spectrogram front-ends as TensorFlow ops (usable inside `tf.data` maps and inside models).

Three front-ends are provided, each reproducing the published pre-processing of a family of methods:

| name           | input                     | output                         | used by           |
|----------------|---------------------------|--------------------------------|-------------------|
| `lvs`          | float32 [B, T] @ 16 kHz   | [B, 257, frames, 1]            | LVS, EZ-VSL, SLAVC, FNAC, AVGN |
| `csol`         | float32 [B, T] @ 16 kHz   | [B, frames, 64, 1] (dB)        | CSOL / DSOL       |
| `avsa`         | float32 [B, C, T] @ 24 kHz| [B, frames, 128, C] (dB)       | AVSA (ambisonics) |

Level: the published front-ends are not level invariant (a clip 20 dB quieter moves the LVS log spectrogram by
0.38 everywhere and pushes most bins of a -45 dBFS clip onto its 1e-7 floor). `normalize_level` scales every clip
to one gated RMS level before the front-end; `make_dataset(audio_level_db=...)` applies it, and a model trained with it
records the level in its `eval_settings`, so that evaluation and `avloc localize` apply it too.

Frame counts: `lvs` gives `(T - 512) // 238 + 1` (3 s -> 200, 10 s -> 671); `csol` gives `1 + T // 80`
(1 s -> 201); `avsa` gives `1 + T // 240` (1 s -> 101).
"""

import functools

import numpy as np

LVS_SAMPLE_RATE = 16000
LVS_NPERSEG = 512
LVS_NOVERLAP = 274
LVS_LOG_FLOOR = 1e-7
LVS_LOG_SCALE = 12.0

CSOL_SAMPLE_RATE = 16000
CSOL_N_FFT = 160
CSOL_HOP = 80
CSOL_N_MELS = 64
CSOL_TOP_DB = 80.0

AVSA_SAMPLE_RATE = 24000
AVSA_N_FFT = 512
AVSA_HOP = 240
AVSA_N_MELS = 128
AVSA_TOP_DB = 100.0


def _tf():
    import tensorflow as tf

    return tf


@functools.lru_cache(maxsize=None)
def tukey_window(length=LVS_NPERSEG, alpha=0.25):
    """Periodic Tukey window, as `scipy.signal.get_window(('tukey', alpha), length)` (the `spectrogram` default).

    Args:
        length: window length in samples.
        alpha: fraction of the window inside the cosine tapers.

    Returns:
        float64 numpy array [length].
    """
    n = length + 1  # periodic = symmetric window of length+1 with the last sample dropped
    window = np.ones(n)
    width = int(np.floor(alpha * (n - 1) / 2.0))
    ramp = np.arange(0, width + 1)
    window[: width + 1] = 0.5 * (1 + np.cos(np.pi * (-1 + 2.0 * ramp / alpha / (n - 1))))
    tail = np.arange(n - width - 1, n)
    window[n - width - 1 :] = 0.5 * (1 + np.cos(np.pi * (-2.0 / alpha + 1 + 2.0 * tail / alpha / (n - 1))))
    return window[:-1]


@functools.lru_cache(maxsize=None)
def hann_window(length):
    """Periodic Hann window (librosa's `get_window('hann', n, fftbins=True)`), float64 [length]."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)


def _hz_to_mel_slaney(freq):
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    mel = freq / f_sp
    return np.where(freq >= min_log_hz, min_log_mel + np.log(np.maximum(freq, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz_slaney(mel):
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


@functools.lru_cache(maxsize=None)
def mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):
    """Slaney-scale, Slaney-normalised triangular mel filters (librosa's defaults: htk=False, norm='slaney').

    Args:
        sample_rate: audio sample rate in Hz.
        n_fft: FFT size; the filters cover `1 + n_fft // 2` bins.
        n_mels: number of mel bands.
        fmin, fmax: band edges in Hz (`fmax=None` -> Nyquist).

    Returns:
        float32 numpy array [n_mels, 1 + n_fft // 2].
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2.0, 1 + n_fft // 2)
    mel_edges = _mel_to_hz_slaney(np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2))
    widths = np.diff(mel_edges)
    ramps = mel_edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_edges[2 : n_mels + 2] - mel_edges[:n_mels]))[:, None]
    return weights.astype(np.float32)


def lvs_spectrogram(wave):
    """LVS / EZ-VSL log spectrogram, computed on the batch in graph.

    Equal (within 1e-4) to `np.log(scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=274)[2] + 1e-7) / 12`:
    periodic Tukey(0.25) window, per-frame mean removal (constant detrend), one-sided PSD with density scaling.

    Args:
        wave: float32 [B, T] waveform at 16 kHz (or [T], treated as a batch of one).

    Returns:
        float32 [B, 257, frames, 1] with frequency as height and time as width;
        `frames = (T - 512) // 238 + 1` (3 s -> 200, 10 s -> 671).

    Example:
    >>> spec = lvs_spectrogram(tf.zeros([2, 48000]))
    >>> spec.shape
    TensorShape([2, 257, 200, 1])
    """
    tf = _tf()
    wave = tf.convert_to_tensor(wave, dtype=tf.float32)
    if wave.shape.rank == 1:
        wave = wave[None]
    window = tukey_window(LVS_NPERSEG, 0.25)
    frames = tf.signal.frame(wave, LVS_NPERSEG, LVS_NPERSEG - LVS_NOVERLAP, axis=-1)  # [B, F, 512]
    frames = frames - tf.reduce_mean(frames, axis=-1, keepdims=True)
    spectrum = tf.signal.rfft(frames * tf.constant(window, tf.float32))  # [B, F, 257]
    power = tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))
    # Density scaling, doubled for the one-sided spectrum except at DC and Nyquist.
    scale = np.full(LVS_NPERSEG // 2 + 1, 2.0 / (LVS_SAMPLE_RATE * np.sum(window**2)))
    scale[0] /= 2.0
    scale[-1] /= 2.0
    psd = power * tf.constant(scale, tf.float32)
    log_spec = tf.math.log(psd + LVS_LOG_FLOOR) / LVS_LOG_SCALE
    return tf.transpose(log_spec, [0, 2, 1])[..., None]


def _centered_stft(wave, n_fft, hop):
    """STFT (complex) of [N, T] with librosa's `center=True, pad_mode='constant'` framing, Hann window ->
    [N, frames, 1 + n_fft//2]."""
    tf = _tf()
    padded = tf.pad(wave, [[0, 0], [n_fft // 2, n_fft // 2]])
    frames = tf.signal.frame(padded, n_fft, hop, axis=-1)
    return tf.signal.rfft(frames * tf.constant(hann_window(n_fft), tf.float32))


def _centered_power_stft(wave, n_fft, hop):
    """|STFT|^2 of [N, T] (`_centered_stft`) -> [N, frames, 1 + n_fft//2]."""
    tf = _tf()
    spectrum = _centered_stft(wave, n_fft, hop)
    return tf.math.square(tf.math.real(spectrum)) + tf.math.square(tf.math.imag(spectrum))


def power_to_db(power, top_db=80.0, amin=1e-10, axes=None):
    """`librosa.power_to_db(S, ref=1.0, amin=amin, top_db=top_db)` applied independently to each slice.

    Args:
        power: float32 power tensor.
        top_db: floor relative to the maximum (None: no floor).
        amin: minimum power before the log.
        axes: axes over which the maximum is taken (default: all but the first, i.e. per example).

    Returns:
        float32 tensor of the same shape, in dB.
    """
    tf = _tf()
    log_spec = 10.0 * tf.math.log(tf.maximum(power, amin)) / np.log(10.0)
    if top_db is None:
        return log_spec
    if axes is None:
        axes = list(range(1, power.shape.rank))
    return tf.maximum(log_spec, tf.reduce_max(log_spec, axis=axes, keepdims=True) - top_db)


def csol_logmel(wave):
    """CSOL / DSOL log-mel: 16 kHz, n_fft 160, hop 80, Hann, centred (zero padding), 64 Slaney mel bands,
    `power_to_db(ref=1, amin=1e-10, top_db=80)` per example — librosa's defaults, within 1e-3 dB.

    Args:
        wave: float32 [B, T] at 16 kHz.

    Returns:
        float32 [B, frames, 64, 1] in dB, time as height, mel as width; `frames = 1 + T // 80` (1 s -> 201).

    Example:
    >>> csol_logmel(tf.zeros([1, 16000])).shape
    TensorShape([1, 201, 64, 1])
    """
    tf = _tf()
    wave = tf.convert_to_tensor(wave, dtype=tf.float32)
    if wave.shape.rank == 1:
        wave = wave[None]
    power = _centered_power_stft(wave, CSOL_N_FFT, CSOL_HOP)
    mel = tf.matmul(power, tf.constant(mel_filterbank(CSOL_SAMPLE_RATE, CSOL_N_FFT, CSOL_N_MELS).T))
    return power_to_db(mel, top_db=CSOL_TOP_DB)[..., None]


def avsa_logmel(wave):
    """AVSA log-mel for (multichannel, e.g. first-order ambisonic) audio: 24 kHz, n_fft 512, hop 240
    (100 frames/s), Hann, centred, 128 Slaney mel bands of the *magnitude* spectrum (the official
    `librosa.feature.melspectrogram(power=1.0)`, `datasets/preprocessing.py LogMelSpectrogram`), then
    `power_to_db(top_db=100)` per example and channel (as the official code, dB of a magnitude).

    Args:
        wave: float32 [B, C, T] at 24 kHz ([B, T] is treated as one channel).

    Returns:
        float32 [B, frames, 128, C] in dB (time = height, mel = width, channels last);
        `frames = 1 + T // 240`.

    Example:
    >>> avsa_logmel(tf.zeros([1, 4, 24000])).shape
    TensorShape([1, 101, 128, 4])
    """
    return _logmel_of(_avsa_spectrum(wave))


def _avsa_spectrum(wave):
    """The STFT of `avsa_logmel` per channel: [B, C, T] ([T], [B, T]: one channel) -> complex [B, C, frames, bins]."""
    tf = _tf()
    wave = tf.convert_to_tensor(wave, dtype=tf.float32)
    if wave.shape.rank == 1:
        wave = wave[None]
    if wave.shape.rank == 2:
        wave = wave[:, None]
    batch, channels = tf.shape(wave)[0], tf.shape(wave)[1]
    spectrum = _centered_stft(tf.reshape(wave, [batch * channels, tf.shape(wave)[2]]), AVSA_N_FFT, AVSA_HOP)
    return tf.reshape(spectrum, [batch, channels, tf.shape(spectrum)[1], tf.shape(spectrum)[2]])


def _logmel_of(spectrum):
    """`avsa_logmel` from `_avsa_spectrum`: [B, C, frames, bins] -> dB [B, frames, 128, C]."""
    tf = _tf()
    batch, channels, frames, bins = (tf.shape(spectrum)[i] for i in range(4))
    flat = tf.reshape(spectrum, [batch * channels, frames, bins])
    magnitude = tf.sqrt(tf.math.square(tf.math.real(flat)) + tf.math.square(tf.math.imag(flat)))
    mel = tf.matmul(magnitude, tf.constant(mel_filterbank(AVSA_SAMPLE_RATE, AVSA_N_FFT, AVSA_N_MELS).T))
    db = power_to_db(mel, top_db=AVSA_TOP_DB)  # per (example, channel)
    db = tf.reshape(db, [batch, channels, frames, AVSA_N_MELS])
    return tf.transpose(db, [0, 2, 3, 1])


def avsa_intensity(wave):
    """Mel-band active intensity of a first-order ambiX field (W, Y, Z, X), the audio input that keeps the sign
    between W and the dipoles that magnitude log-mels lose (front from back, left from right; beyond the official
    code, as the intensity-vector features of sound-event localisation). On the STFT of `avsa_logmel` (24 kHz,
    n_fft 512, hop 240, Hann, centred): Re(conj(W) C) for C = Y, Z, X, summed in the same 128 Slaney mel bands,
    divided by the band's energy (|W|^2 + |Y|^2 + |Z|^2 + |X|^2) / 2. For a single plane wave (SN3D) each band
    holds the unit vector towards the source, whatever its level; silence gives 0.

    Args:
        wave: float32 [B, 4, T] ambiX at 24 kHz.

    Returns:
        float32 [B, frames, 128, 3] (channels Y, Z, X: left, up, front), `frames = 1 + T // 240`.

    Example:
    >>> avsa_intensity(tf.zeros([1, 4, 24000])).shape
    TensorShape([1, 101, 128, 3])
    """
    return _intensity_of(_avsa_spectrum(wave))


def _intensity_of(spectrum):
    """`avsa_intensity` from the ambiX `_avsa_spectrum` [B, 4, frames, bins] -> [B, frames, 128, 3]."""
    tf = _tf()
    batch, frames, bins = tf.shape(spectrum)[0], tf.shape(spectrum)[2], tf.shape(spectrum)[3]
    real, imag = tf.math.real(spectrum), tf.math.imag(spectrum)
    active = real[:, :1] * real[:, 1:] + imag[:, :1] * imag[:, 1:]  # Re(conj(W) C): [B, 3, frames, bins]
    energy = 0.5 * tf.reduce_sum(real * real + imag * imag, axis=1)  # [B, frames, bins]
    mel = tf.constant(mel_filterbank(AVSA_SAMPLE_RATE, AVSA_N_FFT, AVSA_N_MELS).T)
    active = tf.reshape(tf.matmul(tf.reshape(active, [batch * 3, frames, bins]), mel), [batch, 3, frames, AVSA_N_MELS])
    ratio = tf.math.divide_no_nan(active, tf.matmul(energy, mel)[:, None])
    return tf.transpose(ratio, [0, 2, 3, 1])


SPHERE_AUDIO_INPUTS = {"ambix": 4, "ambix_intensity": 7}
"""The audio inputs of AVC / AVSA and their channels: "ambix" (official) the log-mels of W, Y, Z, X;
"ambix_intensity" those and the three intensity channels of `avsa_intensity`."""


def sphere_audio_features(wave, audio_input="ambix"):
    """AVC / AVSA audio features of (rotated) ambiX fields [B, 4, T]: [B, frames, 128, channels] (see
    `SPHERE_AUDIO_INPUTS`); the first four channels are always the log-mels of `avsa_logmel`."""
    if audio_input not in SPHERE_AUDIO_INPUTS:
        raise ValueError(f"audio_input must be one of {', '.join(SPHERE_AUDIO_INPUTS)}, got {audio_input!r}.")
    spectrum = _avsa_spectrum(wave)  # one STFT for both
    mels = _logmel_of(spectrum)
    if audio_input == "ambix":
        return mels
    return _tf().concat([mels, _intensity_of(spectrum)], axis=-1)


LEVEL_FLOOR_DB = -100.0
"""Clips quieter than this (RMS, dBFS) count as silence: `normalize_level` raises them by at most the difference."""
LEVEL_FRAME_SECONDS = 0.05
LEVEL_GATE_DB = 20.0


def normalize_level(wave, level_db, sample_rate=16000, gate_db=LEVEL_GATE_DB):
    """Scales each clip so that its gated RMS level is `level_db` dBFS (loudness normalisation before the front-end).

    The level is that of the sound, not of the silence around it: the mean power of the 50 ms frames within
    `gate_db` dB of the clip's loudest frame (loudness meters gate silence the same way). A clip with one short
    event in a second of silence is brought to the same level as a continuous one. All channels of a multichannel
    clip share one gain, so that their balance, which carries direction, is kept. Digital silence stays silent: a
    clip below `LEVEL_FLOOR_DB` gains at most `level_db - LEVEL_FLOOR_DB` dB.

    Args:
        wave: float32 [B, T] or [B, C, T] waveforms.
        level_db: target gated RMS in dBFS (e.g. -20.0: 0.1).
        sample_rate: the waves' rate (sets the 50 ms frames).
        gate_db: frames more than this below the loudest frame do not count (None: plain RMS over the clip).

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> loud = normalize_level(0.5 * tf.ones([1, 16000]), -20.0)
    >>> round(float(tf.sqrt(tf.reduce_mean(loud ** 2))), 4)
    0.1
    """
    tf = _tf()
    wave = tf.convert_to_tensor(wave, dtype=tf.float32)
    size = max(1, int(round(LEVEL_FRAME_SECONDS * sample_rate)))
    frames = tf.signal.frame(wave, size, size, pad_end=True, axis=-1)  # [B, (C,) F, size]
    power = tf.reduce_mean(tf.square(frames), axis=-1)  # [B, (C,) F]
    if wave.shape.rank == 3:
        power = tf.reduce_mean(power, axis=1)  # [B, F]: one level for all channels
    if gate_db is None:
        level = tf.reduce_mean(power, axis=1)
    else:
        loudest = tf.reduce_max(power, axis=1, keepdims=True)
        gate = tf.cast(power >= loudest * 10.0 ** (-float(gate_db) / 10.0), tf.float32)
        level = tf.reduce_sum(power * gate, axis=1) / tf.maximum(tf.reduce_sum(gate, axis=1), 1.0)
    rms = tf.sqrt(level)
    floor = 10.0 ** (LEVEL_FLOOR_DB / 20.0)
    gain = 10.0 ** (float(level_db) / 20.0) / tf.maximum(rms, floor)
    return wave * tf.reshape(gain, [-1] + [1] * (wave.shape.rank - 1))


def with_level(frontend, level_db):
    """`frontend` ("lvs", "csol", "avsa" or a callable on 16 kHz waves) preceded by `normalize_level(., level_db)`;
    the front-end itself when `level_db` is None."""
    sample_rate = FRONTEND_SAMPLE_RATES.get(frontend, LVS_SAMPLE_RATE) if isinstance(frontend, str) else LVS_SAMPLE_RATE
    frontend = get_frontend(frontend)
    if level_db is None:
        return frontend

    def levelled(wave):
        return frontend(normalize_level(wave, level_db, sample_rate))

    levelled.__name__ = f"{getattr(frontend, '__name__', 'frontend')}_at_{float(level_db):g}dbfs"
    return levelled


FRONTENDS = {"lvs": lvs_spectrogram, "csol": csol_logmel, "avsa": avsa_logmel}
FRONTEND_FREQUENCY_AXES = {"lvs": 1, "csol": 2, "avsa": 2}
"""Axis of the frequency bins in each front-end's output (SpecAugment's frequency masks go there)."""
FRONTEND_SAMPLE_RATES = {"lvs": LVS_SAMPLE_RATE, "csol": CSOL_SAMPLE_RATE, "avsa": AVSA_SAMPLE_RATE}


def get_frontend(name):
    """Returns the front-end function for `name` ("lvs", "csol", "avsa") or raises a ValueError listing them."""
    if callable(name):
        return name
    if name not in FRONTENDS:
        raise ValueError(f"Unknown audio front-end {name!r}; choose one of {sorted(FRONTENDS)}.")
    return FRONTENDS[name]
