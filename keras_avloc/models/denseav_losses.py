"""DenseAV's losses as pure functions of tensors: the multi-head similarity volume, its max-over-image / average-over-time
aggregation (MISA), the calibrated symmetric InfoNCE and the regularisers (facts and constants from mhamilton723/DenseAV;
see `keras_avloc.models.denseav` for the model, the sources and the deviations)."""

import itertools
import math

from keras import ops

from keras_avloc.models.losses_common import cross_entropy_with_integer_targets

NUM_HEADS = 2
CAL_INIT = 1.0
CAL_MIN, CAL_MAX = 0.01, 100.0
REGULARIZER_WEIGHTS = {"nonneg": 0.01, "silence": 0.01, "negative_audio": 0.01, "tv": 0.01, "cal_balance": 0.1,
                       "specialization": 0.05, "mixup": 0.1}


def _heads(tensor, num_heads):
    shape = ops.shape(tensor)
    channels = tensor.shape[-1]
    if channels % num_heads:
        raise ValueError(f"DenseAV: {channels} feature channels do not split into {num_heads} heads.")
    return ops.reshape(ops.cast(tensor, "float32"), (*[shape[i] for i in range(len(tensor.shape) - 1)], num_heads,
                                                      channels // num_heads))


def similarity_volume(audio_maps, image_maps, num_heads=NUM_HEADS):
    """Every audio clip against every image: s[a, v, k, h, w, t], float32.

    Args:
        audio_maps: [A, t, D] aligned audio features; image_maps: [V, h, w, D] aligned image features.
        num_heads: K; head k uses channels k*D/K ... (k+1)*D/K - 1.

    Returns:
        float32 [A, V, K, h, w, t].
    """
    return ops.einsum("atkc,vhwkc->avkhwt", _heads(audio_maps, num_heads), _heads(image_maps, num_heads))


def paired_similarity(audio_maps, image_maps, num_heads=NUM_HEADS, audio_mask=None):
    """Each clip against its own image, times the silence mask: P[b, k, h, w, t], float32."""
    sims = ops.einsum("btkc,bhwkc->bkhwt", _heads(audio_maps, num_heads), _heads(image_maps, num_heads))
    if audio_mask is not None:
        sims = sims * ops.cast(audio_mask, "float32")[:, None, None, None, :]
    return sims


def masked_time_mean(values, audio_mask):
    """Mean over the last axis (time) of `values` [A, ..., t] where `audio_mask` [A, t] is on (the official
    `masked_mean`: denominator clamped at 0.001)."""
    mask = ops.cast(audio_mask, "float32")
    mask = ops.reshape(mask, (ops.shape(mask)[0],) + (1,) * (len(values.shape) - 2) + (ops.shape(mask)[1],))
    return ops.sum(values * mask, axis=-1) / ops.maximum(ops.sum(mask, axis=-1), 0.001)


def misa_aggregate(volume, audio_mask=None):
    """"misa": max over heads (elementwise), max over image space, mean over unmasked time -> [A, V]."""
    sims = ops.max(volume, axis=2)
    sims = ops.max(sims, axis=(2, 3))
    if audio_mask is None:
        return ops.mean(sims, axis=-1)
    return masked_time_mean(sims, audio_mask)


def calibration_weight(theta, minimum=CAL_MIN, maximum=CAL_MAX):
    """w = exp(theta) clamped to [0.01, 100]."""
    return ops.clip(ops.exp(ops.cast(theta, "float32")), minimum, maximum)


def calibrate(sims, theta):
    """w * sims minus its global mean (`SimilarityCalibrator(subtract_mean=True)`)."""
    scaled = calibration_weight(theta) * sims
    return scaled - ops.mean(scaled)


def symmetric_nce(sims):
    """1/2 (CE over rows + CE over columns), the diagonal holding the matched pairs."""
    labels = ops.arange(ops.shape(sims)[0], dtype="int32")
    return 0.5 * cross_entropy_with_integer_targets(sims, labels) + \
        0.5 * cross_entropy_with_integer_targets(ops.transpose(sims), labels)


def specialization_loss(paired):
    """Mean over head pairs (i < j) of mean |P_i| |P_j|; 0 with one head."""
    heads = paired.shape[1]
    pairs = list(itertools.combinations(range(heads), 2))
    if not pairs:
        return ops.zeros((), "float32")
    return sum(ops.mean(ops.abs(paired[:, i]) * ops.abs(paired[:, j])) for i, j in pairs) / len(pairs)


def denseav_loss_terms(audio_maps, image_maps, theta, num_heads=NUM_HEADS, audio_mask=None, positive_mask=None,
                       image_mask=None, weights=None, cal_init=CAL_INIT):
    """The DenseAV objective and each of its regularisers.

    Args:
        audio_maps: [B, t, D]; image_maps: [B, h, w, D] (aligned features of matched pairs).
        theta: log of the calibration weight (scalar variable).
        num_heads: K.
        audio_mask: [B, t], 1 = not silent (None: all on).
        positive_mask: [B, t], 1 = the clip's own audio, 0 = spliced-in negative audio (None: all on).
        image_mask: [B, h, w], 1 = the clip's own image, 0 = mixed-in frames (None: all on).
        weights: regulariser weights (default `REGULARIZER_WEIGHTS`).
        cal_init: calibration initial value (the balance term pushes w back up to it).

    Returns:
        dict of float32 scalars: "loss" (NCE + weighted regularisers), "nce" and the unweighted "nonneg",
        "silence", "negative_audio", "tv", "cal_balance", "specialization", "mixup"; plus "temperature" (w)
        and the [B, B] calibrated "sims".
    """
    weights = dict(REGULARIZER_WEIGHTS, **(weights or {}))
    batch, steps = ops.shape(audio_maps)[0], ops.shape(audio_maps)[1]
    mask = ops.ones((batch, steps), "float32") if audio_mask is None else ops.cast(audio_mask, "float32")
    positive = ops.ones_like(mask) if positive_mask is None else ops.cast(positive_mask, "float32")
    volume = similarity_volume(audio_maps, image_maps, num_heads)
    sims = calibrate(misa_aggregate(volume, mask), theta)
    nce = symmetric_nce(sims)
    paired = paired_similarity(audio_maps, image_maps, num_heads, mask)
    terms = {"nce": nce, "nonneg": ops.mean(ops.square(ops.minimum(volume, 0.0)))}
    silent = 1.0 - mask
    silent_count = ops.sum(silent)
    per_frame = ops.mean(ops.abs(volume), axis=(1, 2, 3, 4))  # [A, t]
    terms["silence"] = ops.where(silent_count > 0, ops.sum(per_frame * silent) / ops.maximum(silent_count, 1.0), 0.0)
    negative = (1.0 - positive) * mask
    cells = float(paired.shape[1] * paired.shape[2] * paired.shape[3]) if None not in paired.shape[1:4] else \
        ops.cast(ops.prod(ops.shape(paired)[1:4]), "float32")
    negative_total = ops.sum(negative) * cells
    terms["negative_audio"] = ops.where(
        negative_total > 0, ops.sum(ops.square(paired) * negative[:, None, None, None, :]) / ops.maximum(negative_total, 0.1),
        0.0)
    # (one time step: no difference to penalise; the mean of an empty tensor would be NaN)
    terms["tv"] = ops.mean(ops.square(paired[..., 1:] - paired[..., :-1])) if paired.shape[-1] != 1 else \
        ops.zeros((), "float32")
    weight = calibration_weight(theta)
    terms["cal_balance"] = ops.square(ops.maximum(math.log(cal_init) - ops.log(ops.maximum(weight, 1e-8)), 0.0))
    terms["specialization"] = specialization_loss(paired)
    if image_mask is None:
        terms["mixup"] = ops.zeros((), "float32")
    else:
        outside = 1.0 - ops.cast(image_mask, "float32")
        outside_total = ops.sum(outside) * float(paired.shape[1]) * ops.cast(steps, "float32")
        terms["mixup"] = ops.sum(ops.square(paired * outside[:, None, :, :, None])) / ops.maximum(outside_total, 0.1)
    loss = nce
    for name in REGULARIZER_WEIGHTS:
        if name == "specialization" and num_heads < 2:
            continue
        loss = loss + weights[name] * terms[name]
    terms.update(loss=loss, temperature=weight, sims=sims)
    return terms
