"""Ground-truth maps: one rule per protocol, always at 224 x 224, independent of the model's input size.

| protocol    | rule        | ground truth of cIoU, AUC and the pointing game                            |
|-------------|-------------|---------------------------------------------------------------------------|
| vggss       | `union`     | binary union of the annotated boxes (official `testset_gt` for VGG-SS)     |
| flickr      | `consensus` | every annotator's box adds 1, divided by 2, capped at 1 (official Flickr)  |
| stamps      | `union`     | the union of the sounding objects' boxes (the tight boxes of their masks)  |
| stamps-mix  | `union`     | per source: that source's box; overall: the union of both                  |
| music-duet  | `union`     | per source: its box; overall: the union of both                            |

The stamps protocols also score the exact alpha masks, where a record has them: mask IoU (the binarised
map against the mask) and the pointing game on the mask (`mask_pointing_game`). cIoU and AUC use the boxes
on purpose: they binarise every map at its median, i.e. call half the image "sounding", so against a mask
that covers 10% of the frame (the stamps' average) even a perfect map scores cIoU <= 0.2 and the AUC
saturates near 0.19 (measured on the demo's val split, against 0.15 for the centre prior), while boxes keep
them comparable with the published VGG-SS numbers. The `mask` rule stays available for other protocols.

Box pixels follow the official convention: each normalised coordinate maps to `int(size * max(v, 0))`
and a box fills `map[y1:y2, x1:x2]`, so a box whose corners fall on the same pixel row or column adds
nothing (the real vggss.json has 18 such boxes, mostly from its placeholder coordinates; they are scored
exactly as the official evaluator scores them). Heatmaps of any size are upsampled to these maps by the
`Evaluator`, so the same heatmaps score identically whatever size the model ran at.

Everything here is pure numpy: callers read mask files themselves (`keras_avloc.io.media.read_mask`).
"""

import numpy as np

from keras_avloc.io.errors import AvlocError

GT_SIZE = 224
"""Side of every ground-truth map (all published protocols evaluate at 224 x 224)."""

PROTOCOL_GT_RULES = {"vggss": "union", "flickr": "consensus", "stamps": "union", "stamps-mix": "union",
                     "music-duet": "union", "extended-vggss": "union", "extended-flickr": "consensus"}
GT_RULES = ("union", "consensus", "mask")


class GroundTruthError(AvlocError, ValueError):
    """A record cannot give the ground truth its protocol's rule needs (e.g. the mask rule without a mask)."""


def box_pixels(box, size=GT_SIZE):
    """Pixel corners `(x1, y1, x2, y2)` of a normalised box: `int(size * max(v, 0))` per coordinate."""
    x1, y1, x2, y2 = (int(size * max(float(v), 0.0)) for v in box)
    return x1, y1, x2, y2


def box_gt_map(boxes, size=GT_SIZE):
    """VGG-SS ground truth: binary union of normalised boxes `[x1, y1, x2, y2]` (official `testset_gt`).

    Args:
        boxes: array-like [K, 4] (K may be 0 -> all-zero map).
        size: map side.

    Returns:
        float32 array [size, size] of 0/1.
    """
    gt = np.zeros((size, size), dtype=np.float32)
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = box_pixels(box, size)
        gt[y1:y2, x1:x2] = 1.0
    return gt


def flickr_gt_map(annotator_boxes, size=GT_SIZE):
    """Flickr-SoundNet ground truth: soft consensus of the annotators' boxes.

    Every box (of every annotator) adds 1 over `map[y1:y2, x1:x2]`; the sum is divided by 2 and capped
    at 1 (official `testset_gt`). Pixel coordinates are `int(size * v)` of the normalised values, which
    equals the official `int(224 * px / 256)` for boxes given in 256-pixel units as `px / 256`.

    Args:
        annotator_boxes: [K, 4] boxes, or a list over annotators of [K_a, 4] boxes.
        size: map side.

    Returns:
        float32 array [size, size] with values in {0, 0.5, 1}.
    """
    flat = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in annotator_boxes] if len(annotator_boxes) else []
    boxes = np.concatenate(flat) if flat else np.zeros((0, 4))
    gt = np.zeros((size, size), dtype=np.float64)
    for box in boxes:
        x1, y1, x2, y2 = box_pixels(box, size)
        gt[y1:y2, x1:x2] += 1.0
    return np.minimum(gt / 2.0, 1.0).astype(np.float32)


def degenerate_box_count(boxes, size=GT_SIZE):
    """How many boxes cover no pixel at `size` (inverted, empty, or outside the image)."""
    count = 0
    for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1, x2, y2 = box_pixels(box, size)
        count += int(min(x2, size) <= x1 or min(y2, size) <= y1)
    return count


def ground_truth_map(rule, boxes=None, mask=None, size=GT_SIZE):
    """The ground-truth map of one record (or one source) under a rule.

    Args:
        rule: "union", "consensus" or "mask" (see `PROTOCOL_GT_RULES`).
        boxes: normalised corner boxes [K, 4] (may be empty).
        mask: bool / 0-1 array [size, size] for the "mask" rule (None when the record has no mask).
        size: map side (`GT_SIZE`).

    Returns:
        float32 [size, size].

    Raises:
        GroundTruthError: the "mask" rule for a record that has boxes but no mask.
    """
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if rule == "union":
        return box_gt_map(boxes, size)
    if rule == "consensus":
        return flickr_gt_map(boxes, size)
    if rule != "mask":
        raise ValueError(f"unknown ground-truth rule {rule!r}; choose one of {GT_RULES}.")
    if mask is None:
        if len(boxes):
            raise GroundTruthError("the mask rule needs the record's mask, and it has none (only boxes); "
                                   "evaluate with a box protocol (vggss) or add the masks")
        return np.zeros((size, size), np.float32)
    mask = np.asarray(mask)
    if mask.shape != (size, size):
        raise GroundTruthError(f"mask of shape {mask.shape}, expected ({size}, {size}); resize it (nearest) first")
    return (mask > 0.5).astype(np.float32)
