"""Controls and helpers that `evaluate_model` scores beside a model's own maps.

* The listening control: every frame heard with another class's clip (`swapped_audio_records`), and how much of the
  model's lead over the random map that takes away (`listening_summary`).
* Mixtures: a multi-source model's per-source maps paired with the ground-truth sources (`mixture_maps`,
  `match_predicted_sources`).
"""

import numpy as np

from keras_avloc.metrics.groundtruth import GT_SIZE
from keras_avloc.models.contract import MultiSource


def listening_summary(own, swapped, random=None):
    """The listening control of one model: its scores with another class's audio, and what they lost.

    Args:
        own: the model's metrics with each frame's own audio ("auc", "pointing_game", ...).
        swapped: the same model's metrics with another class's audio (`evaluate_model(swap_audio=seed)`).
        random: the random map's metrics on the same split, or None.

    Returns:
        dict: "auc", "pointing_game" (swapped), "own_auc", "own_pointing_game", "auc_drop" (own - swapped), and
        with `random`, "margin_lost":
        the share of the model's AUC margin over the random map that the swap takes away (1: the map follows the
        sound only; 0: objectness, the audio changes nothing; None when the model does not beat the random map).
    """
    summary = {"auc": swapped["auc"], "pointing_game": swapped.get("pointing_game"), "own_auc": own["auc"],
               "own_pointing_game": own.get("pointing_game"), "auc_drop": own["auc"] - swapped["auc"]}
    if random is not None:
        margin = own["auc"] - random["auc"]
        summary["margin_lost"] = (own["auc"] - swapped["auc"]) / margin if margin > 0 else None
    return summary


def swapped_audio_records(records, seed=0):
    """The records with each one's audio (and video) taken from a record of another class, drawn with `seed`.

    The listening control: frames, boxes and masks stay; only what is heard changes. A record whose class is the
    only one in the split keeps its own audio.

    Args:
        records: annotation records (`load_split`); seed: int.

    Returns:
        new list of records (the input is not changed).

    Example:
        >>> swapped = swapped_audio_records(load_split("datasets/stamps", "test"), seed=0)  # doctest: +SKIP
    """
    rng = np.random.default_rng([int(seed), 1103])
    classes = np.array([str(record.get("class") or "") for record in records])
    swapped = []
    for position, record in enumerate(records):
        others = np.nonzero(classes != classes[position])[0]
        donor = records[int(others[rng.integers(0, len(others))])] if len(others) else record
        swapped.append(dict(record, audio=donor.get("audio"), video=donor.get("video")))
    return swapped


def match_predicted_sources(predicted_ids, true_ids):
    """Order of the predicted source slots that pairs them with the true sources.

    A true source takes the slot that predicted its class; the remaining slots fill the remaining
    sources in their order. Only class labels are used (never the ground-truth maps).

    Args:
        predicted_ids: int [B, N] predicted classes (-1 = none); true_ids: int [B, K] with K <= N.

    Returns:
        int [B, K] slot index for every true source.
    """
    predicted_ids, true_ids = np.asarray(predicted_ids), np.asarray(true_ids)
    order = np.zeros(true_ids.shape, dtype=np.int64)
    for b in range(len(true_ids)):
        free = list(range(predicted_ids.shape[1]))
        pending = []
        for k, class_id in enumerate(true_ids[b]):
            hits = [slot for slot in free if class_id >= 0 and predicted_ids[b, slot] == class_id]
            if hits:
                order[b, k] = hits[0]
                free.remove(hits[0])
            else:
                pending.append(k)
        for k in pending:
            order[b, k] = free.pop(0)
    return order


def mixture_maps(model, images, audio, class_ids, single_maps, class_conditioned=False):
    """Per-source maps and class-indexed maps of a batch of mixtures, at 224 x 224.

    Args:
        model: a model; with `localize_sources` (AVGN) its class-aware maps are used.
        images, audio: the model inputs.
        class_ids: int [B, K] ground-truth class of every source (-1 = unknown to the model).
        single_maps: [B, H, W] the model's `localize` maps (used for every source without `localize_sources`).
        class_conditioned: localise the ground-truth classes instead of the predicted ones.

    Returns:
        (source_maps [B, K, H, W] in source order, class_maps [B, K, H, W]: the map of class
        `class_ids[b, k]`).
    """
    sources = class_ids.shape[1]
    if not isinstance(model, MultiSource):
        repeated = np.repeat(np.asarray(single_maps, np.float32)[:, None], sources, axis=1)
        return repeated, repeated
    size = (GT_SIZE, GT_SIZE)
    class_maps = np.asarray(model.localize_sources(images, audio, class_ids=class_ids, image_size=size)[0], np.float32)
    if class_conditioned:
        return class_maps, class_maps
    predicted, predicted_ids, _ = model.localize_sources(images, audio, n_sources=sources, min_probability=None,
                                                         image_size=size)
    order = match_predicted_sources(predicted_ids, class_ids)
    source_maps = np.take_along_axis(np.asarray(predicted, np.float32), order[:, :, None, None], axis=1)
    return source_maps, class_maps
