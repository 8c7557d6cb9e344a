"""IEr's formulas as pure functions of tensors: the audio-instance-identification objective and its curriculum, the
class-aware maps, the interference filters of stage two (see `keras_avloc.models.ier` for the model, the official
sources and the deviations)."""

from keras import ops

from keras_avloc.layers.replicas import global_batch
from keras_avloc.models.csol import LOCATION_WEIGHT, bce_with_logits, adaptive_max_pool_2x2, av_logits, negative_images
from keras_avloc.models.losses_common import l2_normalize

MASK_THRESHOLDS = ("fixed", "batch_max", "image_max", "gap", "batch_mean")
"""The supplement's five binarisations of the visual prototype maps (see `visual_mask_weights`)."""
MIX_START, MIX_END = 0.5, 0.9
SOURCES_START, SOURCES_END = 2, 4
TOP_DB = 80.0
"""The `csol` front-end's per-example floor (max - 80 dB; `keras_avloc.data.audio.CSOL_TOP_DB`, checked by a test)."""


def class_expanded_features(audio_vecs, steps):
    """F_k = f_a + Delta_k(a): audio [B, D] and steps [B, K, D] -> float32 [B, K, D]."""
    return ops.cast(audio_vecs, "float32")[:, None, :] + ops.cast(steps, "float32")


def prototype_logits(expanded, prototypes, scale, bias):
    """s_k = scale * cos(F_k, P^a_k) + bias: [B, K, D] x [K, D] -> float32 [B, K]."""
    cosine = ops.sum(l2_normalize(expanded, axis=-1) * l2_normalize(ops.cast(prototypes, "float32"), axis=-1)[None],
                     axis=-1)
    return ops.cast(scale, "float32") * cosine + ops.cast(bias, "float32")


def multi_hot(labels, num_classes):
    """Union of one-hots: labels int [B, n] (-1 = none) -> float32 [B, K]."""
    labels = ops.cast(labels, "int32")
    hot = ops.one_hot(ops.maximum(labels, 0), num_classes) * ops.cast(labels >= 0, "float32")[..., None]
    return ops.max(hot, axis=1)


def aii_loss_terms(logits, targets, valid=None):
    """Audio Instance Identifier loss: mean BCE of sigmoid(s) against multi-hot targets.

    Args:
        logits: s [B, K]; targets: 0/1 [B, K]; valid: optional 0/1 [B] (rows without labels are ignored).

    Returns:
        dict: "aii_loss" (mean over valid rows and K), "aii_accuracy" (share of valid rows whose set
        {k: s_k > 0} equals the target set).
    """
    logits = ops.cast(logits, "float32")
    targets = ops.cast(targets, "float32")
    valid = ops.ones_like(logits[:, 0]) if valid is None else ops.cast(valid, "float32")
    per_row = ops.mean(targets * ops.softplus(-logits) + (1.0 - targets) * ops.softplus(logits), axis=-1)
    count = ops.maximum(ops.sum(valid), 1.0)
    exact = ops.cast(ops.all(ops.equal(ops.cast(logits > 0, "float32"), targets), axis=-1), "float32")
    return {"aii_loss": ops.sum(per_row * valid) / count, "aii_accuracy": ops.sum(exact * valid) / count}


def mix_logmels(logmels, sources, levels_db, top_db=TOP_DB):
    """Mixes dB log-mels in the power domain: clip i + clips i+1 .. i+n-1 of the batch (wrapping).

    Args:
        logmels: [B, T, F, 1] in dB (`csol_logmel`).
        sources: int n >= 1 (scalar tensor or int); at most `levels_db.shape[1]`.
        levels_db: [B, N] level of each added clip (column 0 is ignored: the clip itself stays at 0 dB).
        top_db: the per-example floor of the front-end (max - 80 dB).

    Returns:
        float32 [B, T, F, 1]: 10 log10(sum_j 10^((roll_j + level_j) / 10)), floored at max - top_db.
    """
    logmels = ops.cast(logmels, "float32")
    levels_db = ops.cast(levels_db, "float32")
    power = ops.power(10.0, logmels / 10.0)
    for j in range(1, int(levels_db.shape[1])):
        active = ops.cast(j < sources, "float32")
        partner = ops.roll(logmels, shift=-j, axis=0) + levels_db[:, j][:, None, None, None]
        power = power + active * ops.power(10.0, partner / 10.0)
    mixed = 10.0 * ops.log10(ops.maximum(power, 1e-10))
    return ops.maximum(mixed, ops.max(mixed, axis=(1, 2, 3), keepdims=True) - top_db)


def mixture_labels(labels, sources, max_sources):
    """Pseudo-labels of the mixtures of `mix_logmels`: int [B] -> int [B, max_sources] (-1 beyond n)."""
    labels = ops.cast(labels, "int32")
    columns = [labels] + [ops.where(j < sources, ops.roll(labels, shift=-j, axis=0), -1) for j in range(1, max_sources)]
    return ops.stack(columns, axis=1)


def curriculum(clusterings_done, curriculum_epochs, start=MIX_START, end=MIX_END, sources_start=SOURCES_START,
               sources_end=SOURCES_END):
    """(mixed share p, source count n) after `clusterings_done` clusterings (0 = the first): linear over
    `curriculum_epochs` clusterings from (0.5, 2) to (0.9, 4)."""
    fraction = 1.0 if curriculum_epochs <= 1 else min(1.0, max(0, clusterings_done) / (curriculum_epochs - 1))
    return start + (end - start) * fraction, int(round(sources_start + (sources_end - sources_start) * fraction))


def prototype_maps(backbone_maps, dictionary, sharpness):
    """L^v: softmax over k of sharpness * cos(v_fea[h, w], P^v_k): [B, h, w, C] x [K, C] -> float32 [B, h, w, K]."""
    cosine = ops.einsum("bhwc,kc->bhwk", l2_normalize(ops.cast(backbone_maps, "float32"), axis=-1),
                        l2_normalize(ops.cast(dictionary, "float32"), axis=-1))
    return ops.softmax(ops.cast(sharpness, "float32") * cosine, axis=-1)


def class_av_logits(image_maps, expanded, av_scale):
    """w cos(f_v[h, w], F_k): [B, h, w, D] x [B, K, D] -> float32 [B, h, w, K]."""
    return ops.cast(av_scale, "float32") * ops.einsum("bhwd,bkd->bhwk",
                                                      l2_normalize(ops.cast(image_maps, "float32"), axis=-1),
                                                      l2_normalize(ops.cast(expanded, "float32"), axis=-1))


def visual_mask_weights(maps, variant="image_max", ratio=0.5, value=0.5):
    """GAP of the binarised visual prototype maps, one weight per class (the supplement's five variants).

    Args:
        maps: L^v [B, h, w, K] in [0, 1].
        variant: "fixed" (L > value), "batch_max" (L > ratio x max over the batch), "image_max" (L > ratio x
            each image's max over h, w, K), "gap" (mean of L itself), "batch_mean" (L_k > the batch mean of L_k;
            over all classes it would be the constant 1/K, L being a softmax over K). The batch variants make a
            scene's weights depend on the scenes batched with it, at inference too (evaluation batches: 16).
        ratio, value: as above.

    Returns:
        float32 [B, K]: the share of each image's locations where class k is on (for "gap": the mean of L_k).
    """
    maps = ops.cast(maps, "float32")
    if variant == "gap":
        return ops.mean(maps, axis=(1, 2))
    if variant == "fixed":
        threshold = ops.convert_to_tensor(value, "float32")
    elif variant == "batch_max":  # over the global batch under tf.distribute (as one replica would see it)
        threshold = ratio * ops.max(global_batch(maps))
    elif variant == "image_max":
        threshold = ratio * ops.max(maps, axis=(1, 2, 3), keepdims=True)
    elif variant == "batch_mean":
        threshold = ops.mean(global_batch(maps), axis=(0, 1, 2), keepdims=True)  # per class (L sums to 1 over K at each location)
    else:
        raise ValueError(f"unknown mask threshold {variant!r}; choose one of {', '.join(MASK_THRESHOLDS)}.")
    return ops.mean(ops.cast(maps > threshold, "float32"), axis=(1, 2))


def guided_audio_distribution(presence_logits, mask_weights=None):
    """p^av_k = sigmoid(s_k) w_k / sum_j sigmoid(s_j) w_j ([B, K]); uniform where the product is all zero;
    `mask_weights=None`: no visual guidance (w = 1)."""
    presence = ops.sigmoid(ops.cast(presence_logits, "float32"))
    weighted = presence if mask_weights is None else presence * ops.cast(mask_weights, "float32")
    total = ops.sum(weighted, axis=-1, keepdims=True)
    uniform = ops.ones_like(weighted) / float(weighted.shape[-1])
    return ops.where(total > 1e-12, weighted / ops.maximum(total, 1e-12), uniform)


def smooth_distribution(p, smoothing):
    """(1 - smoothing) p + smoothing / K: keeps log p finite where the filters zeroed a class."""
    p = ops.cast(p, "float32")
    return (1.0 - smoothing) * p + smoothing / float(p.shape[-1])


def symmetric_kl(p, log_q):
    """Per-row KL(p || q) + KL(q || p) of distributions p [B, K] and log q [B, K] -> float32 [B]."""
    p = ops.cast(p, "float32")
    log_p = ops.log(ops.maximum(p, 1e-12))
    q = ops.exp(log_q)
    return ops.sum(p * (log_p - log_q), axis=-1) + ops.sum(q * (log_q - log_p), axis=-1)


def ier_stage_two_loss_terms(image_maps, audio_vecs, av_scale, class_maps, target, class_scale,
                             location_weight=LOCATION_WEIGHT):
    """Stage-two loss: symmetric KL between the visual and the visually-guided audio distributions plus CSOL's
    localisation BCE.

    Args:
        image_maps: f_v [B, h, w, D]; audio_vecs: f_a [B, D]; av_scale: w.
        class_maps: M [B, h, w, K] (`referrer_maps`).
        target: p^av [B, K] (`guided_audio_distribution`; no gradient).
        class_scale: gamma of q = softmax(gamma GAP(M)).
        location_weight: weight of the localisation term (0.5).

    Returns:
        dict: "loss", "kl" (batch mean of the symmetric KL), "location", "positive_bce", "negative_bce".
    """
    positive = av_logits(image_maps, audio_vecs, av_scale)
    negative = av_logits(negative_images(image_maps), audio_vecs, av_scale)
    positive_bce = ops.mean(bce_with_logits(ops.max(positive, axis=(1, 2)), 1))
    negative_bce = ops.mean(bce_with_logits(adaptive_max_pool_2x2(negative), 0))
    location = 0.5 * (positive_bce + negative_bce)
    log_q = ops.log_softmax(ops.cast(class_scale, "float32") * ops.mean(class_maps, axis=(1, 2)), axis=-1)
    kl = ops.mean(symmetric_kl(ops.stop_gradient(target), log_q))
    return {"loss": kl + location_weight * location, "kl": kl, "location": location, "positive_bce": positive_bce,
            "negative_bce": negative_bce}
