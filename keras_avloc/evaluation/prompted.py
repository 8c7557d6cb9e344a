"""DenseAV's evaluations on the stamps scenes: sound- and speech-prompted segmentation, cross-modal retrieval and
head disentanglement (protocols "stamps-sound" and "stamps-speech"; official code mhamilton723/DenseAV
`denseav/eval_utils.py` `get_paired_heatmaps`, `denseav/train.py` `calc_recalls`, `disentangle_validation`).

* Prompted segmentation: each scene's heatmap for its own audio (a sounding object's recording on `test`, a
  spoken description of one visible object on `test_speech` / `test_speech_unseen`) against that object's
  exact mask. A model with `evaluation_outputs` (DenseAV) gives the official heatmap: max over heads, mean over
  the non-silent time steps; the maps are min-max normalised *globally* over the evaluation set at feature
  resolution and then upsampled bilinearly. Other models give their `localize` map (normalised the same
  way). Per prompt class: the AP of the pooled pixels and the best IoU over 20 thresholds spread over that
  class's values (`keras_avloc.metrics.prompted_segmentation_map` / `_miou`); mAP and mIoU are the means
  over classes. The centre prior and the random map are scored the same way.
* Retrieval recall@1/5/10 both ways over the first `retrieval_limit` (1,000) scenes: DenseAV's per-head
  "misa" scores summed over heads (`calc_recalls`); LVS / EZ-VSL-style models their max-over-space cosine.
  "audio->image" ranks the images for each clip (the official I_r@k), "image->audio" the clips for each image
  (A_r@k). Chance is k / N.
* Disentanglement (models with 2 heads, on "stamps-speech" with `sound_split`): each pair's per-head score,
  min-max normalised per head over the speech and the sound pairs together; Pred.Dis = the better pairing of
  (head, modality) of the mean AP of each head's score for "this pair is speech" / "sound"; Act.Dis the same
  with 1 - the head's mean score on that modality (`disentangle_validation`).
* "Advanced" speech metrics (DenseAV, records with a `speech` span): the same, with the time mean taken only
  over the aligned steps of the spoken prompt widened by 0.2 s on each side (the official `timing` masks:
  steps floor(T (start - 0.2) / length) up to ceil(T (end + 0.2) / length), exclusive, clipped to the clip).
"""

import os

import numpy as np

from keras_avloc.evaluation.report import EvaluationError, _baseline_maps, _progress, _records
from keras_avloc.io import media
from keras_avloc.io.files import check_output_folder, write_json
from keras_avloc.metrics.groundtruth import GT_SIZE
from keras_avloc.metrics.denseav import prompted_segmentation_map, prompted_segmentation_miou
from keras_avloc.metrics.ranking import average_precision, retrieval_recall
from keras_avloc.models.contract import MultiHead

PROTOCOLS = {"stamps-sound": "test", "stamps-speech": "test_speech"}
"""Protocol -> default split."""
SPEECH_CLIP_SECONDS = 3.0  # the stamps clip: a spoken prompt lies anywhere in it
TIMING_MARGIN = 0.2  # seconds added before and after the spoken word (official "advanced" masks)
RETRIEVAL_LIMIT = 1000
FIGURE_SAMPLES = 4


def _dataset(model, root, split, records, batch_size, clip_seconds):
    import keras_avloc.data as data_lib

    inputs = data_lib.InputSettings.for_model(model, clip_seconds=float(clip_seconds))
    return data_lib.make_dataset(root, split=split, inputs=inputs, training=False, batch_size=batch_size,
                                 on_error="skip", records=records, ground_truth=False)


def _upsample(maps, size):
    import tensorflow as tf

    return tf.image.resize(np.asarray(maps, np.float32)[..., None], size, method="bilinear").numpy()[..., 0]


def _cosine_scores(image_maps, audio_vecs):
    """[A, V] max over space of the cosine similarity of audio a with image v."""
    images = image_maps / np.maximum(np.linalg.norm(image_maps, axis=-1, keepdims=True), 1e-12)
    audio = audio_vecs / np.maximum(np.linalg.norm(audio_vecs, axis=-1, keepdims=True), 1e-12)
    return np.einsum("ac,vhwc->avhw", audio, images).reshape(len(audio), len(images), -1).max(axis=-1)


def _misa_scores(model, image_maps, audio_maps, masks, chunk=16):
    """[A, V] DenseAV retrieval scores: per-head misa, summed over heads."""
    from keras_avloc.models.denseav import masked_time_mean, similarity_volume

    rows = []
    for start in range(0, len(audio_maps), chunk):
        volume = similarity_volume(audio_maps[start:start + chunk], image_maps, model.num_heads)  # [a, V, K, h, w, t]
        import keras

        per_head = keras.ops.max(volume, axis=(3, 4))  # [a, V, K, t]
        mask = masks[start:start + chunk]
        scores = masked_time_mean(keras.ops.transpose(per_head, (0, 2, 1, 3)), mask)  # [a, K, V]
        rows.append(np.asarray(scores).sum(axis=1))
    return np.concatenate(rows)


def _word_mean(sims, span, offset, clip_seconds):
    """Mean over the aligned time steps of a spoken prompt (+- TIMING_MARGIN) of sims [h, w, t] -> [h, w]."""
    steps = sims.shape[-1]
    start = (float(span[0]) - offset - TIMING_MARGIN) / float(clip_seconds) * steps
    end = (float(span[1]) - offset + TIMING_MARGIN) / float(clip_seconds) * steps
    low, high = int(np.clip(np.floor(start), 0, steps - 1)), int(np.clip(np.ceil(end), 1, steps))
    return sims[..., low:max(high, low + 1)].mean(axis=-1)


def _segmentation(heatmaps, masks, classes):
    """mAP / mIoU of heatmaps [N, GT, GT] against each scene's mask, grouped by prompt class."""
    keep = [i for i, mask in enumerate(masks) if mask is not None and mask.any()]
    if not keep:
        raise EvaluationError("the split's scenes have no object masks; prompted segmentation needs them.")
    names = sorted({classes[i] for i in keep})
    ids = np.array([names.index(classes[i]) for i in keep])
    truth = np.stack([masks[i] for i in keep])
    value, per_class = prompted_segmentation_map(heatmaps[keep], truth, ids)
    miou, per_class_iou = prompted_segmentation_miou(heatmaps[keep], truth, ids)
    return {"map": value, "miou": miou, "samples": len(keep),
            "per_class_ap": {names[c]: float(v) for c, v in per_class.items()},
            "per_class_iou": {names[c]: float(v) for c, v in per_class_iou.items()}}


class _Collector:
    """Runs a model over one split and keeps what the three evaluations need."""

    def __init__(self, model, root, split, batch_size, progress, max_batches, clip_seconds, retrieval_limit):
        self.records = _records(root, split)
        self.dense = isinstance(model, MultiHead)
        self.maps, self.masks, self.classes, self.positions, self.scores = [], [], [], [], []
        self.advanced = []  # DenseAV maps averaged over the spoken word only (None where a record has no span)
        offset = max(SPEECH_CLIP_SECONDS / 2.0 - float(clip_seconds) / 2.0, 0.0)  # the centred clip's start
        self.retrieval = {"image": [], "audio": [], "mask": []}
        self.figure = []
        dataset = _dataset(model, root, split, self.records, batch_size, clip_seconds)
        total = -(-len(self.records) // batch_size)
        kept = 0
        for number, (x, y) in enumerate(_progress(dataset, total, f"evaluate ({split})", progress)):
            if max_batches is not None and number >= max_batches:
                break
            positions = np.asarray(y["index"]).reshape(-1)
            images, audio = np.asarray(x["image"]), np.asarray(x["audio"])
            if self.dense:
                outputs = model.evaluation_outputs(images, audio)  # one forward pass for all three evaluations
                self.maps.append(np.asarray(outputs["maps"]))
                self.scores.append(np.asarray(outputs["scores"]))
                sims = np.asarray(outputs["sims"])
                for row, position in enumerate(positions):
                    span = self.records[int(position)].get("speech")
                    self.advanced.append(None if span is None else _word_mean(sims[row], span, offset, clip_seconds))
            else:
                self.maps.append(np.asarray(model.localize(images, audio, image_size=(GT_SIZE, GT_SIZE))))
            if kept < retrieval_limit:
                take = min(len(positions), retrieval_limit - kept)
                kept += take
                if self.dense:
                    self.retrieval["image"].append(np.asarray(outputs["image_maps"], np.float32)[:take])
                    self.retrieval["audio"].append(np.asarray(outputs["audio_maps"], np.float32)[:take])
                    self.retrieval["mask"].append(np.asarray(outputs["mask"])[:take])
                else:
                    outputs = model({"image": images, "audio": audio}, training=False)
                    if "audio_vecs" in outputs and "image_maps" in outputs:
                        self.retrieval["image"].append(np.asarray(outputs["image_maps"], np.float32)[:take])
                        self.retrieval["audio"].append(np.asarray(outputs["audio_vecs"], np.float32)[:take])
            if self.dense and len(self.figure) < FIGURE_SAMPLES:
                heads = model.localize_heads(images[:1], audio[:1])
                self.figure.append((images[0], heads[0], self.records[int(positions[0])]))
            for position in positions:
                record = self.records[int(position)]
                mask = media.read_mask(record["mask"], GT_SIZE) if record.get("mask") else None
                self.masks.append(None if mask is None else np.asarray(mask) > 0.5)
                self.classes.append(record.get("class", ""))
                self.positions.append(int(position))
        if not self.positions:
            raise EvaluationError(f"no scene of {root} split {split!r} could be evaluated.")
        self.maps = np.concatenate(self.maps)
        self.scores = np.concatenate(self.scores) if self.scores else None

    def heatmaps(self, maps=None):
        """Globally min-max normalised heatmaps at GT_SIZE [N, GT, GT] (of `maps`, default the scored maps)."""
        maps = self.maps if maps is None else maps
        low, high = float(maps.min()), float(maps.max())
        normalised = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
        if normalised.shape[1:] != (GT_SIZE, GT_SIZE):
            normalised = np.concatenate([_upsample(normalised[i:i + 64], (GT_SIZE, GT_SIZE))
                                         for i in range(0, len(normalised), 64)])
        return normalised

    def segmentation(self, heatmaps):
        return _segmentation(heatmaps, self.masks, self.classes)

    def recalls(self, model):
        if not self.retrieval["image"]:
            return None
        images = np.concatenate(self.retrieval["image"])
        audio = np.concatenate(self.retrieval["audio"])
        if self.dense:
            scores = _misa_scores(model, images, audio, np.concatenate(self.retrieval["mask"]))
        else:
            scores = _cosine_scores(images, audio)
        recall = retrieval_recall(scores)
        result = {"pairs": int(len(scores))}
        for k in (1, 5, 10):
            result[f"audio_to_image@{k}"] = recall[f"a_to_b@{k}"]
            result[f"image_to_audio@{k}"] = recall[f"b_to_a@{k}"]
            result[f"chance@{k}"] = min(k / len(scores), 1.0)
        return result


def disentanglement(speech_scores, sound_scores):
    """Pred.Dis and Act.Dis of a two-head model from per-pair per-head scores [N, 2] of speech and sound pairs
    (see the module docstring).

    Returns:
        dict with "pred_dis", "act_dis", "ap" [[head0 speech, head0 sound], [head1 ...]] and "act".
    """
    scores = np.concatenate([np.asarray(speech_scores, np.float64), np.asarray(sound_scores, np.float64)])
    if scores.ndim != 2 or scores.shape[1] != 2:
        raise ValueError(f"disentanglement needs [N, 2] per-head scores, got {scores.shape}.")
    scores = scores - scores.min(axis=0, keepdims=True)
    scores = scores / np.maximum(scores.max(axis=0, keepdims=True), 1e-4)
    is_speech = np.concatenate([np.ones(len(speech_scores), bool), np.zeros(len(sound_scores), bool)])
    ap, act = np.zeros((2, 2)), np.zeros((2, 2))
    for head in range(2):
        for modality, labels in enumerate((is_speech, ~is_speech)):
            ap[head, modality] = average_precision(labels, scores[:, head])
            act[head, modality] = 1.0 - scores[labels, head].mean()
    return {"pred_dis": float(max(0.5 * (ap[0, 0] + ap[1, 1]), 0.5 * (ap[0, 1] + ap[1, 0]))),
            "act_dis": float(max(0.5 * (act[0, 0] + act[1, 1]), 0.5 * (act[0, 1] + act[1, 0]))),
            "ap": ap.tolist(), "act": act.tolist()}


def evaluate_prompted(model, root, protocol="stamps-sound", split=None, out_dir=None, batch_size=16, progress=True,
                      max_batches=None, seed=0, sound_split="test", clip_seconds=None, retrieval_limit=RETRIEVAL_LIMIT):
    """Scores prompted segmentation, retrieval and (two heads, "stamps-speech") disentanglement.

    Args:
        model: a keras-avloc model (DenseAV, or LVS / EZ-VSL as references).
        root: a stamps dataset folder.
        protocol: "stamps-sound" (default split "test") or "stamps-speech" (default "test_speech"; also
            "test_speech_unseen" for unseen languages).
        split: the split to score (default: the protocol's).
        out_dir: write metrics.json there, and for DenseAV heads.png: each head's map for the first scenes (on
            "stamps-speech" with two heads, two speech and two sound scenes).
        batch_size, progress, max_batches: the evaluation loop.
        seed: random-map seed.
        sound_split: the sound pairs the speech pairs are told apart from (disentanglement).
        clip_seconds: audio length (default: the model's for sound, the whole 3 s stamps clip for speech).
        retrieval_limit: at most this many pairs enter the retrieval matrix (1,000, as the paper).

    Returns:
        dict {"protocol", "split", "model": {"map", "miou", "per_class_ap", "per_class_iou", "samples",
        "retrieval", ["disentanglement"]}, "baselines": {"center": {"map", "miou"}, "random": ...}}.
    """
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}.")
    split = split or PROTOCOLS[protocol]
    if out_dir is not None:
        check_output_folder(out_dir)
    settings = dict(getattr(model, "eval_settings", None) or {})
    if clip_seconds is None:
        clip_seconds = SPEECH_CLIP_SECONDS if protocol == "stamps-speech" else float(settings.get("clip_seconds") or 3.0)
    run = _Collector(model, root, split, batch_size, progress, max_batches, clip_seconds, retrieval_limit)
    scores = run.segmentation(run.heatmaps())
    scores["retrieval"] = run.recalls(model)
    if run.advanced and all(item is not None for item in run.advanced):
        advanced = _segmentation(run.heatmaps(np.stack(run.advanced)), run.masks, run.classes)
        scores["advanced_map"], scores["advanced_miou"] = advanced["map"], advanced["miou"]
    metrics = {"protocol": protocol, "split": split, "clip_seconds": float(clip_seconds), "model": scores,
               "maps": "similarity_maps (max over heads, silence-masked time mean)" if run.dense else "localize"}
    figure = run.figure
    if protocol == "stamps-speech" and run.dense and getattr(model, "num_heads", 1) == 2:
        sound = _Collector(model, root, sound_split, batch_size, progress, max_batches,
                           float(settings.get("clip_seconds") or 3.0), 0)
        scores["disentanglement"] = dict(disentanglement(run.scores, sound.scores), sound_split=sound_split)
        figure = run.figure[:FIGURE_SAMPLES // 2] + sound.figure[:FIGURE_SAMPLES // 2]  # speech and sound rows
    baselines = {}
    count = len(run.positions)
    for name in ("center", "random"):
        maps = _baseline_maps(name, count, np.asarray(run.positions), seed).astype(np.float32)
        result = _segmentation((maps - maps.min()) / max(float(maps.max() - maps.min()), 1e-12), run.masks, run.classes)
        baselines[name] = {"map": result["map"], "miou": result["miou"]}
    metrics["baselines"] = baselines
    if out_dir is not None:
        write_json(os.path.join(out_dir, "metrics.json"), metrics)
        if figure:
            _heads_figure(figure, os.path.join(out_dir, "heads.png"))
    return metrics


def _heads_figure(samples, path):
    """One row per scene: the image, then each head's map over it."""
    from keras_avloc.io.imagenet import denormalize_images
    from keras_avloc.viz.figures import overlay_heatmap, save_figure
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = samples[0][1].shape[0]
    figure, axes = plt.subplots(len(samples), heads + 1, figsize=(3 * (heads + 1), 3 * len(samples)), squeeze=False)
    for row, (image, maps, record) in enumerate(samples):
        picture = denormalize_images(image[None])[0]
        axes[row, 0].imshow(picture)
        label = record.get("prompt") or record.get("class", "")
        axes[row, 0].set_title(f"{record.get('kind', '')}: {label}"[:40], fontsize=8)
        for head in range(heads):
            axes[row, head + 1].imshow(overlay_heatmap(picture, maps[head]))
            axes[row, head + 1].set_title(f"head {head}", fontsize=8)
    for axis in axes.ravel():
        axis.axis("off")
    save_figure(figure, path)


def prompted_table(metrics):
    """A text table of a `evaluate_prompted` result."""
    model = metrics["model"]
    lines = [f"{metrics['protocol']} on {metrics['split']} ({model['samples']} scenes)",
             f"{'':<10}{'mAP':>8}{'mIoU':>8}"]
    lines.append(f"{'model':<10}{model['map']:>8.3f}{model['miou']:>8.3f}")
    if "advanced_map" in model:
        lines.append(f"{'word only':<10}{model['advanced_map']:>8.3f}{model['advanced_miou']:>8.3f}"
                     "   (time mean over the spoken word +- 0.2 s)")
    for name, row in metrics["baselines"].items():
        lines.append(f"{name:<10}{row['map']:>8.3f}{row['miou']:>8.3f}")
    if model.get("retrieval"):
        r = model["retrieval"]
        lines.append(f"retrieval over {r['pairs']} pairs: " + ", ".join(
            f"a->i@{k} {r[f'audio_to_image@{k}']:.3f} / i->a@{k} {r[f'image_to_audio@{k}']:.3f} (chance {r[f'chance@{k}']:.3f})"
            for k in (1, 5, 10)))
    if model.get("disentanglement"):
        d = model["disentanglement"]
        lines.append(f"disentanglement (vs {d['sound_split']}): Pred.Dis {d['pred_dis']:.3f}, Act.Dis {d['act_dis']:.3f}")
    return "\n".join(lines)
