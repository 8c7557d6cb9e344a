"""Ground truth for evaluation, read straight from a dataset root's split file.

This reader is deliberately independent of the tf.data pipeline so that saved heatmaps can be scored
without TensorFlow. The split file is `ROOT/<split>.json`, a JSON list of VGG-SS-style records
(`file`, `class`, `bbox` [[x1, y1, x2, y2], ...] normalised, optional `mask`, `kind`, `sources`).
"""

import json
import os

import numpy as np

from keras_avloc.metrics.localization import box_gt_map, flickr_gt_map


def read_split(root, split="test"):
    """Parses `ROOT/<split>.json` into a list of record dicts.

    Raises:
        FileNotFoundError / ValueError with a message naming the file and the fix.
    """
    path = os.path.join(root, f"{split}.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} not found: the dataset root needs one annotation file per split "
            f"(e.g. `avloc data ... --out {root}` writes {split}.json), or pass the right --split."
        )
    with open(path) as handle:
        try:
            records = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); regenerate it or fix line {err.lineno}.") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) and "file" in r for r in records):
        raise ValueError(f"{path} must be a JSON list of objects with a 'file' key (VGG-SS style).")
    return records


def read_mask(root, relative_path, size=224):
    """Reads an 8-bit mask PNG (> 127 = object) resized (nearest) to size×size; float32 0/1."""
    import cv2

    path = os.path.join(root, relative_path)
    image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise FileNotFoundError(f"mask {path} is missing or unreadable; regenerate the dataset's masks.")
    image = cv2.resize(image, (size, size), interpolation=cv2.INTER_NEAREST)
    return (image > 127).astype(np.float32)


def record_gt_map(record, protocol="vggss", size=224, root=None):
    """The ground-truth map [size, size] of one record: Flickr consensus or box union (mask if no box)."""
    boxes = np.asarray(record.get("bbox") or [], dtype=np.float64).reshape(-1, 4)
    if protocol == "flickr":
        return flickr_gt_map(boxes, size)
    if len(boxes) == 0 and record.get("mask") and root is not None:
        return read_mask(root, record["mask"], size)
    return box_gt_map(boxes, size)


def record_source_gt_maps(record, size=224, root=None):
    """[K, size, size] per-source ground truth for a mixture record, or None without `sources`."""
    sources = record.get("sources") or []
    if not sources:
        return None
    maps = []
    for source in sources:
        boxes = np.asarray(source.get("bbox") or [], dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0 and source.get("mask") and root is not None:
            maps.append(read_mask(root, source["mask"], size))
        else:
            maps.append(box_gt_map(boxes, size))
    return np.stack(maps)
