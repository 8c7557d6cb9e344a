"""Extended Flickr-SoundNet / Extended VGG-SS (SLAVC) on a local copy of the official data.

The protocol of Mo & Morgado, "A Closer Look at Weakly-Supervised Audio-Visual Source Localization" (NeurIPS 2022;
stoneMo/SLAVC `test.py:validate`, `utils.py:EvaluatorFull`): the test positives plus non-sounding pairs (a frame
with another clip's audio). A method must localise the positives and stay quiet on the pairs; its confidence is
the mean of the top quarter of its map. Scores: AP and max-F1 at cIoU >= 0.5 and 0.75 over all samples, precision,
LocAcc (cIoU@0.5 on the positives), per-size subsets (`keras_avloc.metrics.extended_table`).

Thresholding: the published numbers (the SLAVC README's test command) binarise each map at its own median
(`--relative_prediction`, here `threshold="median"`, the default). The official script's other mode applies a
fixed 0.5 to maps on a fixed scale (SLAVC's cosines mapped to [0, 1]); here `threshold=0.5`, on the maps a model's
`localize` returns. With the wrong mode, users of the official code report numbers about 40% lower (stoneMo/SLAVC
issue 2). Official maps are upsampled bicubically with aligned corners, the default here too.

Not reproduced from the official code: its loader silently drops positives without media and replaces a sample
that fails to load with a random other one; here both are counted and named (`skipped.listed_without_media`,
`skipped.unreadable_clips`). The official script prints F1 at 11 thresholds; here `F1-*` is their maximum.

Example:
>>> metrics = evaluate_extended(model, "data/vggss", "vggss", out_dir="runs/ext")  # doctest: +SKIP
>>> print(extended_results_table(metrics))  # doctest: +SKIP
"""

import os

from keras_avloc.data.protocols import extended_records

TABLE_COLUMNS = (("AP@50", "AP-all@50"), ("max-F1@50", "F1-all@50"), ("precision@50", "Precision-all@50"),
                 ("LocAcc", "LocAcc"), ("AP@75", "AP-all@75"), ("max-F1@75", "F1-all@75"),
                 ("AUC visible", "AUC-visible@50"))
"""Columns of the printed table: (title, `extended_table` key)."""


def saliency_transform(encoder, alpha):
    """`map_transform` for `evaluate_model`: SLAVC's AV+OGL fusion (`keras_avloc.metrics.extended.saliency_fusion`)
    with the objectness of `encoder` (an ImageNet ResNet-18, as the official script uses), upsampled bicubically
    with aligned corners as the official script upsamples it."""
    import numpy as np

    from keras_avloc.metrics import resize_maps
    from keras_avloc.metrics.extended import saliency_fusion
    from keras_avloc.models.base import objectness_map

    def fuse(maps, images):
        features = np.asarray(encoder(images, training=False))
        objectness = resize_maps(np.asarray(objectness_map(features)), maps.shape[-1], "bicubic_align_corners")
        return saliency_fusion(maps, objectness, alpha)

    return fuse


def evaluate_extended(model, root, testset, metadata=None, annotations=None, heatmaps=None, saliency_alpha=None,
                      saliency_encoder=None, **options):
    """Scores a model (or saved heatmaps) on Extended VGG-SS or Extended Flickr-SoundNet.

    Args:
        model: a keras-avloc model, or None with `heatmaps`.
        root: the local copy (`ROOT/frames/<id>.jpg`, `ROOT/audio/<id>.wav`).
        testset: "vggss" or "flickr".
        metadata: folder with SLAVC's lists (default `ROOT/metadata`); annotations: Flickr's `<id>.xml` folder
            (default `ROOT/Annotations`).
        heatmaps: an .npz of saved maps (`evaluate_heatmaps`); the non-sounding pairs are named `<video>__<audio>`.
        saliency_alpha: fuse each map with object saliency as SLAVC's published numbers do (`saliency_transform`;
            0.9 in its README); None: the audio-visual map alone.
        saliency_encoder: the saliency's image encoder (default: the model's own image encoder).
        **options: passed to `evaluate_model` / `evaluate_heatmaps` (out_dir, baselines, threshold, resize, ...).

    Returns:
        the metrics dict (`extended_table` in the model's and every baseline's row).
    """
    from keras_avloc.evaluation import report

    metadata = metadata or os.path.join(root, "metadata")
    records, missing = extended_records(root, testset, metadata, annotations)
    options.setdefault("resize", "bicubic_align_corners")
    common = dict(split=f"extended_{testset}", protocol=f"extended-{testset}", records=records, missing=missing)
    if heatmaps is not None:
        if saliency_alpha is not None:
            raise report.EvaluationError("saliency fusion needs the frames' features: use a checkpoint, not saved "
                                         "heatmaps (or fuse the maps before saving them).")
        return report.evaluate_heatmaps(heatmaps, root, **common, **options)
    if saliency_alpha is not None:
        encoder = saliency_encoder if saliency_encoder is not None else getattr(model, "image_encoder", None)
        if encoder is None:
            raise report.EvaluationError("saliency fusion needs an image encoder: pass ImageNet ResNet-18 weights.")
        options["map_transform"] = saliency_transform(encoder, float(saliency_alpha))
    return report.evaluate_model(model, root, **common, **options)


def extended_results_table(metrics):
    """A Markdown table of the extended protocol: the model and every baseline (rows), SLAVC's headline columns."""
    rows = [("model", metrics["model"])] + list(metrics.get("baselines", {}).items())
    lines = ["| method | " + " | ".join(title for title, _ in TABLE_COLUMNS) + " |",
             "|---" * (len(TABLE_COLUMNS) + 1) + "|"]
    for name, row in rows:
        table = row.get("extended_table") or {}
        cells = [f"{table[key]:.4f}" if isinstance(table.get(key), float) else "-" for _, key in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    model = metrics["model"]
    lines.append(f"\n{model['num_evaluated']} positives, {model['num_samples'] - model['num_evaluated']} non-sounding "
                 f"pairs; threshold {metrics['source'].get('settings', {}).get('threshold', 'median')}")
    return "\n".join(lines)
