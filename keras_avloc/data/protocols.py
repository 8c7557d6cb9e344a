"""Annotation lists of the field's newer evaluation protocols.

Extended Flickr-SoundNet / Extended VGG-SS (Mo & Morgado, "A Closer Look at Weakly-Supervised Audio-Visual Source
Localization", NeurIPS 2022; stoneMo/SLAVC `datasets.py`, `get_test_dataset`): the positives of the Flickr / VGG-SS
test lists plus the non-sounding pairs of `metadata/{flickr,vggss}_test_plus_silent.csv`. Each row pairs a frame
(`video`) with the audio of another clip (`audio`), or, in 379 rows of the VGG-SS list, with its own audio of a
clip whose source is not visible (`video == audio`, ids absent from `vggss_test.csv`).

Official oddities not reproduced: the official loader neither checks that a pair's files exist nor reports it (its
dataset replaces any sample that fails to load with a random other sample); here a malformed row is an error that
names the file and the line.

Example:
>>> pairs = read_nonsounding_pairs("metadata/vggss_test_plus_silent.csv")  # doctest: +SKIP
>>> pairs[0]  # doctest: +SKIP
{'video': 't-6BSzXBNbM_000051', 'audio': 'pMfpDNSFc-w_000009', 'label': 'non-sounding'}
"""

import csv
import os

import numpy as np

from keras_avloc.data.annotations import (AnnotationError, flickr_records, read_id_list, read_vggss_json,
                                          records_from_entries)

NONSOUNDING_HEADER = ("video", "audio", "label")
EXTENDED_FILES = {
    "vggss": ("vggss_test.csv", "vggss_test_plus_silent.csv", "vggss.json"),
    "flickr": ("flickr_test.csv", "flickr_test_plus_silent.csv", None),
}
"""Per test set: the positives' id list, the non-sounding pairs and (VGG-SS) the boxes, as SLAVC's `metadata/`
names them. Flickr's boxes are the `Annotations/<id>.xml` files of the Flickr-SoundNet download."""


def read_nonsounding_pairs(path):
    """Reads a `*_test_plus_silent.csv` list: the rows labelled `non-sounding`, in file order.

    The header row (`video,audio,label`) is optional; rows with another label are left out, as the official
    loader leaves them out; CRLF line ends and blank lines are ignored.

    Args:
        path: the csv file.

    Returns:
        list of `{"video": frame id, "audio": audio id, "label": "non-sounding"}`.

    Raises:
        AnnotationError: the file is missing, or a row does not have three non-empty fields.
    """
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    pairs = []
    for line_number, row in enumerate(rows, 1):
        cells = tuple(cell.strip() for cell in row)
        if line_number == 1 and cells == NONSOUNDING_HEADER:
            continue
        if len(cells) != 3 or not all(cells):
            raise AnnotationError(f"{path}: line {line_number} has {len(cells)} fields ({','.join(cells)!r}), "
                                  "expected video,audio,label")
        if cells[2] == "non-sounding":
            pairs.append(dict(zip(NONSOUNDING_HEADER, cells)))
    return pairs


def _metadata_file(folder, name, testset):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: not found; Extended {testset} needs {name} in the metadata folder (stoneMo/SLAVC "
                              "`metadata/`; pass that folder with --metadata)")
    return path


def _available(root, file_id):
    return (os.path.isfile(os.path.join(root, "frames", f"{file_id}.jpg"))
            and os.path.isfile(os.path.join(root, "audio", f"{file_id}.wav")))


def extended_records(root, testset, metadata, annotations=None):
    """The records of Extended VGG-SS or Extended Flickr-SoundNet on a local copy laid out as SLAVC expects.

    Layout (stoneMo/SLAVC `datasets.py`, `get_test_dataset`): `ROOT/frames/<id>.jpg` and `ROOT/audio/<id>.wav`;
    `metadata/` holding `EXTENDED_FILES[testset]`; for Flickr, `annotations/<id>.xml` (the Flickr-SoundNet boxes).
    Positives are the ids of the test list, with their boxes (VGG-SS: union ground truth; Flickr: annotator
    consensus); negatives are the `non-sounding` rows of the plus-silent list, named `<video>__<audio>` and scored
    as samples without a visible source (`kind` "offscreen"), each pairing one clip's frame with another clip's
    audio (`frame_id` / `audio_id`).

    Where the official loader silently drops positives without media (and swaps a failing negative for a random
    other sample), here every listed pair whose frame or audio is missing is returned in `missing` with the file
    it lacks.

    Args:
        root: folder holding `frames/` and `audio/`.
        testset: "vggss" or "flickr".
        metadata: folder holding the lists (default layout: `ROOT/metadata`).
        annotations: Flickr only: the folder of `<id>.xml` boxes (default `ROOT/Annotations`).

    Returns:
        (records as `load_split` returns them, positives first in list order then negatives in file order;
        missing: {record name: reason}).

    Raises:
        AnnotationError: naming the file, for a missing list or box file, or a positive without boxes.
    """
    if testset not in EXTENDED_FILES:
        raise AnnotationError(f"unknown extended test set {testset!r}; use one of {', '.join(EXTENDED_FILES)}")
    ids_name, pairs_name, boxes_name = EXTENDED_FILES[testset]
    ids = list(dict.fromkeys(read_id_list(_metadata_file(metadata, ids_name, testset))))
    pairs = read_nonsounding_pairs(_metadata_file(metadata, pairs_name, testset))
    if testset == "vggss":
        boxes_path = _metadata_file(metadata, boxes_name, testset)
        by_id = {record["file"]: record for record in read_vggss_json(boxes_path)}
    else:
        boxes_path = annotations or os.path.join(root, "Annotations")
        if not os.path.isdir(boxes_path):
            raise AnnotationError(f"{boxes_path}: not a folder; Extended Flickr needs the Flickr-SoundNet box files "
                                  "(<id>.xml), pass their folder with --gt-dir")
        by_id = {record["file"]: record for record in flickr_records(boxes_path, ids)}
    missing, entries = {}, []
    for file_id in ids:
        record = by_id.get(file_id)
        if record is None or not len(record["boxes"]):
            raise AnnotationError(f"{boxes_path}: no boxes for test id {file_id!r} of {ids_name}; the official "
                                  "loader cannot score it either (fix the list or the box file)")
        if not _available(root, file_id):
            missing[file_id] = f"frames/{file_id}.jpg or audio/{file_id}.wav missing under {root}"
            continue
        entries.append({"file": file_id, "class": record.get("class", ""), "bbox": record["boxes"].tolist(),
                        "gt": "consensus" if testset == "flickr" else "union"})
    for pair in pairs:
        name = f"{pair['video']}__{pair['audio']}"
        lacking = [path for path in (f"frames/{pair['video']}.jpg", f"audio/{pair['audio']}.wav")
                   if not os.path.isfile(os.path.join(root, path))]
        if lacking:
            missing[name] = f"{' and '.join(lacking)} missing under {root}"
            continue
        entries.append({"file": name, "kind": "offscreen", "frame_id": pair["video"], "audio_id": pair["audio"]})
    source = os.path.join(metadata, pairs_name)
    return records_from_entries(root, entries, source), missing


def nonsounding_pairs(records, seed=0):
    """Non-sounding pairs for any split, built as Extended VGG-SS / Flickr build theirs: each frame with the audio
    of another clip, of another class when classes are known (then the sound's source is not in the picture).

    Only records with a visible source (not "silent" / "offscreen") take part, as frame and as audio donor.

    Args:
        records: `load_split` records.
        seed: the donor draw (same seed, same pairs).

    Returns:
        new records named `<frame>__<audio>`, `kind` "offscreen", no boxes, one per record that has a donor.

    Example:
    >>> pairs = nonsounding_pairs(load_split("datasets/stamps", "test"), seed=0)  # doctest: +SKIP
    """

    pool = [record for record in records if record.get("kind") not in ("silent", "offscreen")]
    classes = np.array([str(record.get("class") or "") for record in pool])
    rng = np.random.default_rng([int(seed), 2022])
    pairs = []
    for position, record in enumerate(pool):
        if classes[position]:
            donors = np.nonzero(classes != classes[position])[0]
        else:  # unknown classes: any other clip
            donors = np.array([i for i in range(len(pool)) if i != position], dtype=int)
        if not len(donors):
            continue
        donor = pool[int(donors[rng.integers(0, len(donors))])]
        frame, heard = record.get("frame_id", record["file"]), donor.get("audio_id", donor["file"])
        pairs.append({
            "file": f"{frame}__{heard}", "class": "", "boxes": np.zeros((0, 4)), "mask": None, "kind": "offscreen",
            "gt": record.get("gt", "union"), "sources": [], "objects": [], "clamped": 0, "prompt": None,
            "language": None, "speech": None, "scenario": None, "interference": None,
            "frame_id": frame, "audio_id": heard, "image": record["image"], "video": record.get("video"),
            "audio": donor["audio"], "audio_video": donor.get("audio_video") or donor.get("video"),
        })
    return pairs


IS3_FILES = {"boxes": "synthetic3240_bbox.json", "masks": "synthetic3240_seg.json"}
IS3_SIZE = 224  # IS3 boxes are pixels of the 224 x 224 frame
IS3_FOLDERS = {"image": ("visual_frames", "frames"), "audio": ("audio_wav", "audio"), "mask": ("gt_masks", "masks")}
"""Where an IS3 file is looked for under ROOT, by kind: the official download's folder, then keras-avloc's."""


def is3_group(stem):
    """IS3's image key of an entry: its file name up to the last `_` (`accordion_baby_10467_baby` ->
    `accordion_baby_10467`), the rule of kaistmm/SSLalignment `test.py`."""
    return "_".join(stem.split("_")[:-1]) or stem


def _is3_local(root, kind, original):
    """The local copy of an IS3 file named by an authors' absolute path: ROOT/<its folder>/<name> or the
    keras-avloc folder of that kind; None when neither exists."""
    name = os.path.basename(str(original).replace("\\", "/"))
    folder = os.path.basename(os.path.dirname(str(original).replace("\\", "/")))
    for candidate in dict.fromkeys((folder,) + IS3_FOLDERS[kind]):
        path = os.path.join(root, candidate, name)
        if candidate and os.path.isfile(path):
            return path
    return None


def is3_records(root, metadata, masks=False):
    """The IS3 entries on a local copy: one record per (image, sounding object), its own audio and box.

    The annotation lists (`metadata/synthetic3240_bbox.json`, and `synthetic3240_seg.json` with `masks`) name media
    by the authors' absolute paths; each is looked for by file name under ROOT (`visual_frames/` or `frames/`,
    `audio_wav/` or `audio/`, `gt_masks/` or `masks/`).

    Args:
        root: the local copy.
        metadata: folder holding the annotation lists.
        masks: also read each entry's mask (the segmentation ground truth of the seg list).

    Returns:
        (records, missing): `load_split`-style records with `group` (the image key, `is3_group`) and
        `pixel_boxes` (int [1, 4], exclusive ends on the 224 grid, the official ground truth); missing:
        {entry: the files it lacks}.

    Raises:
        AnnotationError: a missing or malformed list (naming the file and the entry).
    """
    import json

    def read(name):
        path = _metadata_file(metadata, name, "IS3")
        try:
            with open(path, encoding="utf-8") as handle:
                entries = json.load(handle)
        except (OSError, ValueError) as err:
            raise AnnotationError(f"{path}: not a readable JSON list ({err})") from None
        if not isinstance(entries, list):
            raise AnnotationError(f"{path}: expected a JSON list of {{image, audio, gt_box}} entries")
        return path, entries

    path, entries = read(IS3_FILES["boxes"])
    mask_entries = read(IS3_FILES["masks"])[1] if masks else None
    if mask_entries is not None and len(mask_entries) != len(entries):
        raise AnnotationError(f"{os.path.join(metadata, IS3_FILES['masks'])}: {len(mask_entries)} entries, but "
                              f"{path} has {len(entries)}; the two lists must match entry for entry")
    records, missing, built = [], {}, []
    for position, entry in enumerate(entries):
        where = f"{path} entry {position}"
        box = entry.get("gt_box") if isinstance(entry, dict) else None
        if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
            raise AnnotationError(f"{where}: expected {{image, audio, gt_box: [xmin, ymin, xmax, ymax]}}")
        stem = os.path.splitext(os.path.basename(str(entry.get("image", ""))))[0]
        local = {"image": _is3_local(root, "image", entry.get("image", "")),
                 "audio": _is3_local(root, "audio", entry.get("audio", ""))}
        if mask_entries is not None:
            local["mask"] = _is3_local(root, "mask", mask_entries[position].get("gt_box", ""))
        lacking = [kind for kind, found in local.items() if found is None]
        if lacking:
            missing[stem] = f"no {' / '.join(lacking)} file under {root} (looked for by file name)"
            continue
        pixels = np.asarray([[int(v) for v in box]])
        built.append({"file": stem, "bbox": (pixels / IS3_SIZE).tolist(), "class": stem.split("_")[-1]})
        records.append({"group": is3_group(stem), "pixel_boxes": pixels, **local})
    out = records_from_entries(root, built, path)
    for record, extra in zip(out, records):
        record.update(extra)
        record.pop("video", None)
    return out, missing


def per_source_records(records):
    """IS3-style entries from mixture scenes: each on-screen source of a scene as its own entry, the scene's frame
    with that source's own recording, scored against that source's box (and mask).

    Args:
        records: `load_split` records; those with `sources` (mixtures) take part. A source needs its own audio
            file in ROOT/audio/ and a box (off-screen sources are left out).

    Returns:
        new records named after each source's audio file, `frame_id` the scene (their IS3 image key).

    Example:
    >>> entries = per_source_records(load_split("datasets/stamps", "test_mix"))  # doctest: +SKIP
    """
    out = []
    for record in records:
        for source in record.get("sources") or []:
            audio = source.get("audio")
            if not audio or not len(source.get("boxes", [])) or source.get("offscreen"):
                continue
            stem = os.path.splitext(os.path.basename(audio))[0]
            if os.path.dirname(os.path.abspath(audio)) != os.path.dirname(os.path.abspath(record["audio"])):
                raise AnnotationError(f"{audio}: a source's audio must sit in the scene's audio folder "
                                      f"({os.path.dirname(record['audio'])}) to become an entry of its own")
            frame = record.get("frame_id", record["file"])
            out.append({
                "file": stem, "class": source.get("class", ""), "boxes": np.asarray(source["boxes"]),
                "mask": source.get("mask"), "kind": "single", "gt": record.get("gt", "union"), "sources": [],
                "objects": [], "clamped": 0, "prompt": None, "language": None, "speech": None, "scenario": None,
                "interference": None, "frame_id": frame, "image": record["image"], "video": record.get("video"),
                "audio": audio,
            })
    return out
