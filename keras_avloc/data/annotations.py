"""Annotation parsers for the public sound-source-localisation benchmarks, and the split loader.

Every parser returns plain Python/numpy objects (no TensorFlow), with boxes as float64 numpy arrays
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

from keras_avloc.io import paths
from keras_avloc.io.errors import AvlocError
from keras_avloc.io.files import write_text

FLICKR_FRAME_SIZE = 256
KINDS = ("single", "mixture", "silent", "offscreen", "speech", "mosaic", "duet", "sphere", "interference")
"""Scene kinds a split entry may declare ("silent" / "offscreen" have no visible source)."""


class AnnotationError(AvlocError, ValueError):
    """A malformed annotation file; the message names the file and what is wrong (the one annotation
    error of keras-avloc: parsers, the split loader and the downloader all raise it)."""


def _read_json_list(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a folder, expected a JSON file") from None
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not a UTF-8 text file ({err}); expected a JSON list of entries") from None
    except OSError as err:
        raise AnnotationError(f"{path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err}); re-export it as a JSON list of entries") from None
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def box_array(boxes, where="boxes"):
    """Validates annotation boxes: a list of `[a, b, c, d]` number lists (or one such list) -> float64 [K, 4].

    Raises:
        AnnotationError: strings, nested junk, a wrong number of coordinates, or NaN / infinite values
            (the message names `where`).
    """
    if isinstance(boxes, np.ndarray):
        boxes = boxes.tolist()
    if boxes is None:
        return np.zeros([0, 4])
    if not isinstance(boxes, (list, tuple)):
        raise AnnotationError(f"{where}: bbox must be a list of [x1, y1, x2, y2] number lists, got "
                              f"{type(boxes).__name__} {boxes!r:.60}")
    if len(boxes) and all(_is_number(value) for value in boxes):
        boxes = [boxes]  # one flat box
    for box in boxes:
        if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(_is_number(value) for value in box):
            raise AnnotationError(f"{where}: every box must be 4 numbers [x1, y1, x2, y2], got {box!r:.60}")
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if not np.all(np.isfinite(array)):
        raise AnnotationError(f"{where}: a box has NaN or infinite coordinates ({array[~np.isfinite(array).all(1)][0]}); "
                              "fix or drop that box")
    return array


def clamp_boxes(boxes, where="boxes"):
    """Validates (`box_array`) and clamps normalised corner boxes to [0, 1].

    Out-of-range values are clamped as the official evaluators do (`max(v, 0)`; VGG-SS has placeholder
    coordinates of about -2.88e16), and counted.

    Args:
        boxes: [K, 4] (or one box [4]) of numbers.
        where: name used in error messages.

    Returns:
        (float64 [K, 4] clamped boxes, number of coordinates that were outside [0, 1]). Float64 like the
        JSON values, so the ground-truth pixels `int(224 * v)` are exactly the official evaluators'.
    """
    array = box_array(boxes, where)
    if array.size == 0:
        return np.zeros([0, 4]), 0
    outside = int(np.count_nonzero((array < 0) | (array > 1)))
    return np.clip(array, 0.0, 1.0), outside


def xywh_to_corners(box):
    """Normalised `[x, y, w, h]` -> `[x1, y1, x2, y2]`, as float64 numpy [..., 4]."""
    box = np.asarray(box, dtype=np.float64)
    return np.concatenate([box[..., :2], box[..., :2] + box[..., 2:]], axis=-1)


def read_vggss_json(path):
    """Parses a VGG-SS style json (`vggss.json`).

    Args:
        path: json file, a list of `{"file", "class", "bbox": [[x1, y1, x2, y2], ...]}`.

    Returns:
        list of dicts `{"file", "class", "boxes": float64 [K, 4], "clamped": int}` in file order.
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
        list of `{"file", "class", "boxes": float64 [1, 4] corners, "clamped": int}`.
    """
    records = []
    for position, entry in enumerate(_read_json_list(path)):
        where = f"{path} entry {position}"
        if not isinstance(entry, dict) or "file" not in entry or "bbox" not in entry:
            raise AnnotationError(f"{where}: expected an object with 'file', 'class' and 'bbox' [x, y, w, h]")
        boxes, clamped = clamp_boxes(xywh_to_corners(box_array(entry["bbox"], where)), where=where)
        records.append({"file": str(entry["file"]), "class": entry.get("class", ""), "boxes": boxes, "clamped": clamped})
    return records


def read_music_duet_json(path):
    """Parses MUSIC-Duet json: `{"file", "class_src1", "bbox_src1", "class_src2", "bbox_src2"}` ([x, y, w, h]).

    Returns:
        list of records `{"file", "class": class_src1, "boxes": both boxes [2, 4], "kind": "mixture",
        "sources": [{"class", "boxes": [1, 4]}, {"class", "boxes": [1, 4]}], "objects"}` (`objects`: both
        sources as sounding objects, the layout of the class-aware protocol).
    """
    records = []
    for position, entry in enumerate(_read_json_list(path)):
        where = f"{path} entry {position}"
        try:
            sources = []
            for key in ("src1", "src2"):
                boxes, _ = clamp_boxes(xywh_to_corners(box_array(entry[f"bbox_{key}"], where)), where=where)
                sources.append({"class": entry[f"class_{key}"], "boxes": boxes})
        except (KeyError, TypeError) as err:
            raise AnnotationError(f"{where}: a duet entry needs file, class_src1, bbox_src1, class_src2 and "
                                  f"bbox_src2 (problem: {err})") from None
        records.append(
            {
                "file": str(entry["file"]),
                "class": sources[0]["class"],
                "boxes": np.concatenate([s["boxes"] for s in sources]),
                "kind": "mixture",
                "sources": sources,
                "objects": [{"class": s["class"], "boxes": s["boxes"], "mask": None, "sounding": True}
                            for s in sources],
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
    """`ROOT/<split>.json` (the split name must be a plain name, `keras_avloc.io.paths.check_file_id`)."""
    try:
        paths.check_file_id(split)
    except paths.UnsafePathError as err:
        raise AnnotationError(f"split name: {err}") from None
    return os.path.join(root, f"{split}.json")


def load_split(root, split="test"):
    """Loads the records of one split of a dataset in the keras-avloc layout.

    Reads `ROOT/<split>.json` (VGG-SS style entries, see `data/README.md`); without it, a flat folder of
    `image_NN.jpg` + `audio_NN.wav` is read (all files, labels unknown). Several splits joined by "+"
    ("train+train_speech") are read one after the other as one split.

    Args:
        root: dataset folder.
        split: split name ("train", "val", "test", "test_mix", ...) or names joined by "+".

    Returns:
        list of dicts, in file order (the `index` the pipeline yields), each with `file`, `class`,
        `boxes` (float64 [K, 4] normalised corners, clamped), `mask` (path inside ROOT or None), `kind`,
        `gt` ("union" or "consensus"), `sources` (list of `{class, boxes, mask, audio}`), `objects` (every visible
        object of a mosaic / duet scene: `{class, boxes, mask, sounding}`), `clamped`, the spoken-prompt fields
        `prompt` (text or None), `language` (or None) and `speech` ((start, end) seconds or None), and the
        media paths `image`, `audio`, `video` (from `file`, or from an entry's `frame_id` / `audio_id`: a pair
        of one clip's frame with another clip's audio, as in the non-sounding pairs of the extended protocols;
        such a record also carries `frame_id` / `audio_id` and `audio_video`, the video its audio falls back to).

    Raises:
        AnnotationError: naming the file and entry, for: a missing or unsafe id (`keras_avloc.io.paths`:
            path separators, '..', a leading '.'), a duplicate id, a mask or source-audio path that is
            absolute or leaves ROOT, boxes that are not lists of 4 numbers or hold NaN / inf, an unknown
            `kind` or `gt`, a non-string class. Such files are refused, never followed.

    Example:
    >>> records = load_split("datasets/mine", "test")
    >>> records[0]["boxes"].shape
    (1, 4)
    """
    if "+" in str(split):
        records, seen = [], {}
        for part in str(split).split("+"):
            path = split_path(root, part)
            if not os.path.exists(path):
                raise AnnotationError(f"{path}: no such split file (part of {split!r}); build it or drop it from the "
                                      "split list")
            for position, entry in enumerate(_read_json_list(path)):
                records.append(_split_record(root, path, position, entry, seen))
        return records
    path = split_path(root, split)
    if not os.path.exists(path):
        records = _flat_records(root)
        if records:
            return records
        raise AnnotationError(
            f"{path}: no such split file, and {root} holds no image_NN.jpg + audio_NN.wav pairs; "
            f"create {split}.json (see data/README.md) or pass an existing split"
        )
    records, seen = [], {}
    for position, entry in enumerate(_read_json_list(path)):
        records.append(_split_record(root, path, position, entry, seen))
    return records


def records_from_entries(root, entries, source):
    """`load_split` records of split entries built in memory (`source` names them in errors)."""
    seen = {}
    return [_split_record(root, source, position, entry, seen) for position, entry in enumerate(entries)]


def _split_record(root, path, position, entry, seen):
    """One validated `load_split` record (see there); `seen` maps ids to their first position."""
    where = f"{path} entry {position}"
    if not isinstance(entry, dict) or "file" not in entry:
        raise AnnotationError(f"{where}: has no 'file' key; every entry needs one")
    file_id = entry["file"]
    try:
        paths.check_file_id(file_id)
    except paths.UnsafePathError as err:
        raise AnnotationError(f"{where}: {err}; it is refused, never followed") from None
    if file_id in seen:
        raise AnnotationError(f"{where}: duplicate id {file_id!r} (also entry {seen[file_id]}); every clip may "
                              "appear once per split")
    seen[file_id] = position
    kind = entry.get("kind", "mixture" if entry.get("sources") else "single")
    if kind not in KINDS:
        raise AnnotationError(f"{where}: unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    gt = entry.get("gt", "union")
    if gt not in ("union", "consensus"):
        raise AnnotationError(f"{where}: unknown gt {gt!r}; use 'union' (boxes) or 'consensus' (Flickr)")
    boxes, clamped = clamp_boxes(entry.get("bbox", []), where=where)
    sources, source_clamped = _parts(root, entry, where, "sources", "source", "class / bbox / mask / audio")
    objects, object_clamped = _parts(root, entry, where, "objects", "object", "class / bbox / mask / sounding")
    clamped += source_clamped + object_clamped
    record = {
        "file": file_id,
        "class": _class_name(entry.get("class", ""), where),
        "boxes": boxes,
        "mask": _inside(root, entry.get("mask"), "mask", where),
        "kind": kind,
        "gt": gt,
        "sources": sources,
        "objects": objects,
        "clamped": clamped,
        "prompt": _optional_text(entry, "prompt", where),
        "language": _optional_text(entry, "language", where),
        "speech": _speech_span(entry.get("speech"), where),
        "scenario": _optional_text(entry, "scenario", where),
        "interference": _interference(entry.get("interference"), where),
    }
    record.update(_media_paths(root, file_id))
    for key, media_key in (("frame_id", "image"), ("audio_id", "audio")):
        other = entry.get(key)
        if other is None or other == file_id:
            continue
        try:
            paths.check_file_id(other)
        except paths.UnsafePathError as err:
            raise AnnotationError(f"{where}: {key}: {err}; it is refused, never followed") from None
        record[key] = other
        record[media_key] = _media_paths(root, other)[media_key]
        record["video" if key == "frame_id" else "audio_video"] = _media_paths(root, other)["video"]
    return record


def _directions(value, where):
    """An object's [azimuth, elevation] (radians) at each video frame of a 360° clip, float64 [F, 2], or None."""
    if value is None:
        return None
    try:
        directions = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        directions = None
    if directions is None or directions.ndim != 2 or directions.shape[1] != 2 or not np.all(np.isfinite(directions)):
        raise AnnotationError(f"{where}: 'direction' must be a list of [azimuth, elevation] pairs (radians), got "
                              f"{value!r:.60}")
    return directions


def _optional_text(entry, key, where):
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise AnnotationError(f"{where}: '{key}' must be a string, got {value!r:.40}")
    return value


def _speech_span(value, where):
    """(start, end) seconds of a spoken prompt, or None."""
    if value is None:
        return None
    try:
        start, end = (float(v) for v in value)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: 'speech' must be [start, end] in seconds, got {value!r:.40}") from None
    if not (np.isfinite(start) and np.isfinite(end) and 0.0 <= start <= end):
        raise AnnotationError(f"{where}: 'speech' must be [start, end] with 0 <= start <= end, got {value!r:.40}")
    return (start, end)


def _parts(root, entry, where, key, singular, fields):
    """The validated `sources` (with `audio`) or `objects` (with `sounding`) of an entry, and the clamped-box count."""
    raw = entry.get(key) or []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise AnnotationError(f"{where}: '{key}' must be a list of objects with {fields}")
    parts, clamped = [], 0
    for position, item in enumerate(raw):
        item_where = f"{where} {singular} {position}"
        boxes, item_clamped = clamp_boxes(item.get("bbox", []), where=item_where)
        clamped += item_clamped
        part = {"class": _class_name(item.get("class", ""), item_where), "boxes": boxes,
                "mask": _inside(root, item.get("mask"), "mask", item_where)}
        if key == "sources":
            part["audio"] = _inside(root, item.get("audio"), "audio", item_where)
            if not isinstance(item.get("offscreen", False), bool):
                raise AnnotationError(f"{item_where}: 'offscreen' must be true or false, got {item.get('offscreen')!r:.40}")
            part["offscreen"] = item.get("offscreen", False)
        else:
            if not isinstance(item.get("sounding", False), bool):
                raise AnnotationError(f"{item_where}: 'sounding' must be true or false, got {item.get('sounding')!r:.40}")
            part["sounding"] = bool(item.get("sounding", False))
            part["direction"] = _directions(item.get("direction"), item_where)
        parts.append(part)
    return parts, clamped


def _interference(value, where):
    """An interference scene's {"level_db": float or None, "offscreen": [classes], "silent": [classes]}, or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise AnnotationError(f"{where}: 'interference' must be an object with level_db / offscreen / silent")
    level = value.get("level_db")
    if level is not None and (isinstance(level, bool) or not isinstance(level, (int, float))):
        raise AnnotationError(f"{where}: interference 'level_db' must be a number or null, got {level!r:.40}")
    lists = {}
    for key in ("offscreen", "silent"):
        names = value.get(key) or []
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise AnnotationError(f"{where}: interference '{key}' must be a list of class names")
        lists[key] = list(names)
    return {"level_db": None if level is None else float(level), **lists}


def _class_name(value, where):
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AnnotationError(f"{where}: 'class' must be a string, got {value!r:.60}")
    return value


def _inside(root, relative, what, where):
    """`root/relative` for a path named by a split entry, refusing paths that leave the root."""
    if relative in (None, ""):
        return None
    try:
        return paths.resolve_inside(root, relative, what)
    except paths.UnsafePathError as err:
        raise AnnotationError(f"{where}: {err}; it is refused, never followed") from None


def write_split(records, path):
    """Writes records (as returned by the parsers or `load_split`) to a split json, atomically.

    Boxes are written as lists of corners; media paths are not written (they follow from `file`); mask and
    source-audio paths are written relative to the split file's folder (the dataset root), which must hold
    them.

    Raises:
        AnnotationError: a mask or audio path lies outside the folder of `path`.
    """
    root = os.path.dirname(os.path.abspath(path))

    def relative(value, what):
        if not value:
            return None
        if not os.path.isabs(value):
            return value
        if not paths.is_inside(root, value):
            raise AnnotationError(f"{path}: the {what} {value} lies outside {root}; a split file may only name "
                                  "files inside its dataset root (copy them there first)")
        return os.path.relpath(value, root)

    entries = []
    for record in records:
        entry = {"file": record["file"], "class": record.get("class", ""),
                 "bbox": np.asarray(record.get("boxes", np.zeros([0, 4]))).reshape(-1, 4).tolist()}
        for key in ("kind", "gt"):
            if record.get(key) not in (None, "single", "union"):
                entry[key] = record[key]
        if record.get("mask"):
            entry["mask"] = relative(record["mask"], "mask")
        if record.get("sources"):
            entry["sources"] = []
            for source in record["sources"]:
                written = {"class": source.get("class", ""),
                           "bbox": np.asarray(source.get("boxes", np.zeros([0, 4]))).reshape(-1, 4).tolist()}
                for key in ("mask", "audio"):
                    if source.get(key):
                        written[key] = relative(source[key], key)
                if source.get("offscreen"):
                    written["offscreen"] = True
                entry["sources"].append(written)
        if record.get("objects"):
            entry["objects"] = []
            for item in record["objects"]:
                written = {"class": item.get("class", ""), "sounding": bool(item.get("sounding", False)),
                           "bbox": np.asarray(item.get("boxes", np.zeros([0, 4]))).reshape(-1, 4).tolist()}
                if item.get("mask"):
                    written["mask"] = relative(item["mask"], "mask")
                if item.get("direction") is not None:
                    written["direction"] = np.asarray(item["direction"]).tolist()
                entry["objects"].append(written)
        for key in ("prompt", "language", "scenario", "frame_id", "audio_id"):
            if record.get(key):
                entry[key] = record[key]
        if record.get("interference") is not None:
            entry["interference"] = dict(record["interference"])
        if record.get("speech") is not None:
            entry["speech"] = [float(v) for v in record["speech"]]
        entries.append(entry)
    write_text(path, json.dumps(entries))


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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not a split file (or a broken one, which loading that split reports)
        for entry in data if isinstance(data, list) else []:
            if isinstance(entry, dict) and "file" in entry:
                names.update(_entry_classes(entry))
    for record in records or []:
        names.update(_entry_classes(record))
    return sorted(names - {""})


def _entry_classes(entry):
    """The class names an entry mentions (its own and its sources'), ignoring malformed values."""
    found = [entry.get("class")]
    sources = entry.get("sources")
    if isinstance(sources, list):
        found += [source.get("class") for source in sources if isinstance(source, dict)]
    return {name for name in found if isinstance(name, str)}
