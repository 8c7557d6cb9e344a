"""Annotation parsers for the public sound-source-localisation benchmarks, and the split loader.

Every parser returns plain Python/numpy objects (no TensorFlow), with boxes as float32 numpy arrays
[K, 4] of normalised corners `[x1, y1, x2, y2]` clamped to [0, 1] unless stated otherwise.

Formats:
    * VGG-SS json (`vggss.json`): list of `{"file", "class", "bbox": [[x1, y1, x2, y2], ...]}`, normalised.
      12+ coordinates are a placeholder ~ -2.88e16 and are clamped to [0, 1] (counted in `clamped`).
    * Flickr-SoundNet XML: one file per image, several annotators' boxes in pixels of a 256x256 frame.
      Ground truth is the consensus map: sum of the annotators' boxes / 2, capped at 1.
    * MUSIC solo / duet json: normalised `[x, y, w, h]` (NOT corners); duet entries carry
      `class_src1, bbox_src1, class_src2, bbox_src2`.
    * VGGSound-Duet test csv: `file1,class1,file2,class2` per line.
    * Id lists: `flickr_test.csv` (`id,xx`) and `vggss_test.csv` (one id per line).
"""

import csv
import glob
import json
import os
import re
import xml.etree.ElementTree as ElementTree

import numpy as np

FLICKR_FRAME_SIZE = 256


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and what is wrong."""


def _read_json_list(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err}); re-export it as a JSON list of entries") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def clamp_boxes(boxes, where="boxes"):
    """Clamps normalised corner boxes to [0, 1].

    Args:
        boxes: array-like [K, 4] (or one box [4]); non-finite values count as out of range.
        where: name used in error messages.

    Returns:
        (float32 [K, 4] clamped boxes, number of coordinates that were outside [0, 1]).
    """
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros([0, 4], np.float32), 0
    array = array.reshape(-1, 4) if array.ndim == 1 else array
    if array.ndim != 2 or array.shape[1] != 4:
        raise AnnotationError(f"{where}: boxes must be [x1, y1, x2, y2] lists, got shape {array.shape}")
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)
    outside = int(np.count_nonzero((array < 0) | (array > 1)))
    return np.clip(array, 0.0, 1.0).astype(np.float32), outside


def xywh_to_corners(box):
    """Normalised `[x, y, w, h]` -> `[x1, y1, x2, y2]`, as float64 numpy [..., 4]."""
    box = np.asarray(box, dtype=np.float64)
    return np.concatenate([box[..., :2], box[..., :2] + box[..., 2:]], axis=-1)


def read_vggss_json(path):
    """Parses a VGG-SS style json (`vggss.json`).

    Args:
        path: json file, a list of `{"file", "class", "bbox": [[x1, y1, x2, y2], ...]}`.

    Returns:
        list of dicts `{"file", "class", "boxes": float32 [K, 4], "clamped": int}` in file order.
    """
    records = []
    for position, entry in enumerate(_read_json_list(path)):
        if not isinstance(entry, dict) or "file" not in entry:
            raise AnnotationError(f"{path}: entry {position} has no 'file' key")
        boxes, clamped = clamp_boxes(entry.get("bbox", []), where=f"{path} entry {position}")
        records.append({"file": str(entry["file"]), "class": entry.get("class", ""), "boxes": boxes, "clamped": clamped})
    return records


def read_flickr_xml(path):
    """Reads one Flickr-SoundNet annotation XML.

    Boxes are the `<bbox>` / `<bndbox>` elements (one per annotator and object); coordinates are read from
    `xmin/ymin/xmax/ymax` children when named so, otherwise from the last four numeric children.

    Args:
        path: the XML file.

    Returns:
        float32 [K, 4] boxes in pixels of the 256x256 annotation frame.
    """
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as err:
        raise AnnotationError(f"{path}: cannot parse the XML ({err})") from None
    boxes = []
    for element in root.iter():
        if element.tag.lower() not in ("bbox", "bndbox"):
            continue
        named = {child.tag.lower(): child.text for child in element}
        if all(key in named for key in ("xmin", "ymin", "xmax", "ymax")):
            values = [named[key] for key in ("xmin", "ymin", "xmax", "ymax")]
        else:
            values = [child.text for child in element if re.fullmatch(r"\s*-?\d+(\.\d*)?\s*", child.text or "")][-4:]
        if len(values) != 4:
            raise AnnotationError(f"{path}: a <{element.tag}> element has no xmin/ymin/xmax/ymax coordinates")
        boxes.append([float(value) for value in values])
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def read_flickr_annotations(xml_dir, ids=None):
    """Reads every `<id>.xml` in `xml_dir` (or only `ids`) into `{id: float32 [K, 4] pixel boxes}`."""
    if ids is None:
        paths = sorted(glob.glob(os.path.join(xml_dir, "*.xml")))
    else:
        paths = [os.path.join(xml_dir, f"{item}.xml") for item in ids]
    return {os.path.splitext(os.path.basename(path))[0]: read_flickr_xml(path) for path in paths}


def flickr_records(xml_dir, ids=None, frame_size=FLICKR_FRAME_SIZE):
    """Flickr-SoundNet XMLs as split records (boxes normalised by the 256-pixel frame, consensus ground truth).

    Returns:
        list of `{"file", "class": "", "boxes": float32 [K, 4], "gt": "consensus"}`; write them with
        `write_split` to get a `ROOT/<split>.json` that `make_dataset` turns into consensus maps.
    """
    records = []
    for file_id, boxes in read_flickr_annotations(xml_dir, ids).items():
        records.append(
            {"file": file_id, "class": "", "boxes": (boxes / float(frame_size)).astype(np.float32), "gt": "consensus"}
        )
    return records


def read_music_solo_json(path):
    """Parses MUSIC-Solo json: `{"file", "class", "bbox": [x, y, w, h]}` (normalised, one box).

    Returns:
        list of `{"file", "class", "boxes": float32 [1, 4] corners, "clamped": int}`.
    """
    records = []
    for position, entry in enumerate(_read_json_list(path)):
        boxes, clamped = clamp_boxes(xywh_to_corners(np.asarray(entry["bbox"], np.float64).reshape(-1, 4)),
                                     where=f"{path} entry {position}")
        records.append({"file": str(entry["file"]), "class": entry.get("class", ""), "boxes": boxes, "clamped": clamped})
    return records


def read_music_duet_json(path):
    """Parses MUSIC-Duet json: `{"file", "class_src1", "bbox_src1", "class_src2", "bbox_src2"}` ([x, y, w, h]).

    Returns:
        list of records `{"file", "class": class_src1, "boxes": both boxes [2, 4], "kind": "mixture",
        "sources": [{"class", "boxes": [1, 4]}, {"class", "boxes": [1, 4]}]}`.
    """
    records = []
    for position, entry in enumerate(_read_json_list(path)):
        try:
            sources = []
            for key in ("src1", "src2"):
                boxes, _ = clamp_boxes(xywh_to_corners(np.asarray(entry[f"bbox_{key}"], np.float64).reshape(-1, 4)),
                                       where=f"{path} entry {position}")
                sources.append({"class": entry[f"class_{key}"], "boxes": boxes})
        except KeyError as err:
            raise AnnotationError(f"{path}: duet entry {position} lacks {err.args[0]!r}") from None
        records.append(
            {
                "file": str(entry["file"]),
                "class": sources[0]["class"],
                "boxes": np.concatenate([s["boxes"] for s in sources]),
                "kind": "mixture",
                "sources": sources,
            }
        )
    return records


def _read_text_lines(path):
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None


def read_vggsound_duet_csv(path):
    """Parses the VGGSound-Duet test csv (`file1,class1,file2,class2`).

    Returns:
        list of `{"file1", "class1", "file2", "class2"}` in file order.
    """
    pairs = []
    for line_number, row in enumerate(_read_text_lines(path), 1):
        if len(row) != 4:
            raise AnnotationError(f"{path}: line {line_number} has {len(row)} fields, expected file1,class1,file2,class2")
        row = [cell.strip() for cell in row]
        pairs.append({"file1": row[0], "class1": row[1], "file2": row[2], "class2": row[3]})
    return pairs


def read_id_list(path):
    """Reads an id list: one id per line, or a csv whose first column is the id (`flickr_test.csv`: `id,xx`).

    Returns:
        list of id strings in file order (CRLF line ends and blank lines are ignored).
    """
    return [row[0].strip() for row in _read_text_lines(path)]


# ---------------------------------------------------------------------------------------------------------
# The dataset layout: ROOT/<split>.json or a flat folder of image_NN.jpg + audio_NN.wav.

_FLAT_IMAGE = re.compile(r"^image_(.+)\.jpg$")


def _resolve(root, relative):
    if not relative:
        return None
    return relative if os.path.isabs(relative) else os.path.join(root, relative)


def _media_paths(root, file_id):
    return {
        "image": os.path.join(root, "frames", f"{file_id}.jpg"),
        "audio": os.path.join(root, "audio", f"{file_id}.wav"),
        "video": os.path.join(root, "video", f"{file_id}.mp4"),
    }


def _flat_records(root):
    records = []
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    for name in names:
        match = _FLAT_IMAGE.match(name)
        if not match:
            continue
        key = match.group(1)
        records.append(
            {
                "file": key,
                "class": "",
                "boxes": np.zeros([0, 4], np.float32),
                "mask": None,
                "kind": "single",
                "sources": [],
                "image": os.path.join(root, name),
                "audio": os.path.join(root, f"audio_{key}.wav"),
                "video": os.path.join(root, f"video_{key}.mp4"),
            }
        )
    return records


def split_path(root, split):
    """`ROOT/<split>.json`."""
    return os.path.join(root, f"{split}.json")


def load_split(root, split="test"):
    """Loads the records of one split of a dataset in the keras-avloc layout.

    Reads `ROOT/<split>.json` (VGG-SS style entries, see `data/README.md`); without it, a flat folder of
    `image_NN.jpg` + `audio_NN.wav` is read (all files, labels unknown).

    Args:
        root: dataset folder.
        split: split name ("train", "val", "test", "test_mix", ...).

    Returns:
        list of dicts, in file order (the `index` the pipeline yields), each with `file`, `class`,
        `boxes` (float32 [K, 4] normalised corners, clamped), `mask` (absolute path or None), `kind`,
        `gt` ("union" or "consensus"), `sources` (list of `{class, boxes, mask, audio}`), `clamped`, and the
        media paths `image`, `audio`, `video`.

    Example:
    >>> records = load_split("datasets/mine", "test")
    >>> records[0]["boxes"].shape
    (1, 4)
    """
    path = split_path(root, split)
    if not os.path.exists(path):
        records = _flat_records(root)
        if records:
            return records
        raise AnnotationError(
            f"{path}: no such split file, and {root} holds no image_NN.jpg + audio_NN.wav pairs; "
            f"create {split}.json (see data/README.md) or pass an existing split"
        )
    records = []
    for position, entry in enumerate(_read_json_list(path)):
        if not isinstance(entry, dict) or "file" not in entry:
            raise AnnotationError(f"{path}: entry {position} has no 'file' key; every entry needs one")
        file_id = str(entry["file"])
        boxes, clamped = clamp_boxes(entry.get("bbox", []), where=f"{path} entry {position}")
        sources = []
        for source_position, source in enumerate(entry.get("sources") or []):
            source_boxes, source_clamped = clamp_boxes(source.get("bbox", []),
                                                       where=f"{path} entry {position} source {source_position}")
            clamped += source_clamped
            sources.append(
                {
                    "class": source.get("class", ""),
                    "boxes": source_boxes,
                    "mask": _resolve(root, source.get("mask")),
                    "audio": _resolve(root, source.get("audio")),
                }
            )
        record = {
            "file": file_id,
            "class": entry.get("class", ""),
            "boxes": boxes,
            "mask": _resolve(root, entry.get("mask")),
            "kind": entry.get("kind", "mixture" if sources else "single"),
            "gt": entry.get("gt", "union"),
            "sources": sources,
            "clamped": clamped,
        }
        record.update(_media_paths(root, file_id))
        records.append(record)
    return records


def write_split(records, path):
    """Writes records (as returned by the parsers or `load_split`) to a split json, atomically.

    Boxes are written as lists of corners; media paths are not written (they follow from `file`).
    """
    entries = []
    for record in records:
        entry = {"file": record["file"], "class": record.get("class", ""),
                 "bbox": np.asarray(record.get("boxes", np.zeros([0, 4]))).reshape(-1, 4).tolist()}
        for key in ("kind", "gt"):
            if record.get(key) not in (None, "single", "union"):
                entry[key] = record[key]
        if record.get("mask"):
            entry["mask"] = record["mask"]
        if record.get("sources"):
            entry["sources"] = [
                {key: (np.asarray(value).reshape(-1, 4).tolist() if key == "boxes" else value)
                 for key, value in source.items() if value is not None}
                for source in record["sources"]
            ]
            for source in entry["sources"]:
                source["bbox"] = source.pop("boxes", [])
        entries.append(entry)
    temporary = f"{path}.tmp{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(entries, handle)
    os.replace(temporary, path)


def class_names(root, records=None):
    """The class vocabulary used for `label`: `ROOT/classes.txt` (one per line) when present, otherwise the
    sorted union of non-empty classes over every split json in ROOT (so labels agree across splits)."""
    listed = os.path.join(root, "classes.txt")
    if os.path.exists(listed):
        with open(listed, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    names = set()
    for path in sorted(glob.glob(os.path.join(root, "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, list):
            for entry in data:
                if isinstance(entry, dict) and "file" in entry:
                    names.add(entry.get("class") or "")
                    names.update(source.get("class") or "" for source in entry.get("sources") or [])
    for record in records or []:
        names.add(record.get("class") or "")
        names.update(source.get("class") or "" for source in record.get("sources") or [])
    names.discard("")
    return sorted(names)


def render_box_map(boxes, size, consensus=False):
    """Ground-truth map from normalised corner boxes at `size`x`size`, with the published integer convention
    (`int(clip(b, 0, 1) * size)`, rows y1:y2, columns x1:x2).

    Args:
        boxes: [K, 4] normalised corners.
        size: output side in pixels.
        consensus: False -> union (binary); True -> Flickr consensus (sum / 2, capped at 1).

    Returns:
        float32 [size, size].
    """
    gt_map = np.zeros([size, size], np.float32)
    for x1, y1, x2, y2 in (np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, 1) * size).astype(int):
        gt_map[y1:y2, x1:x2] += 1.0
    if consensus:
        return np.minimum(gt_map / 2.0, 1.0)
    return (gt_map > 0).astype(np.float32)
