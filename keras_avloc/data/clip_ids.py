"""Clip ids of VGGSound-style datasets: `<11-character YouTube id>_<6-digit start second>`.

`read_clip_ids` reads them from every list format the field ships (VGG-SS json, CSV rows, plain lists, YouTube-360's
`segments.txt`); `parse_clip_id` checks one; `clip_url` fills a download URL template. Used by
`keras_avloc.data.download`, which re-exports these names.
"""

import csv
import json
import os
import re

from keras_avloc.data.annotations import AnnotationError

YOUTUBE_ID_PATTERN = r"[A-Za-z0-9_-]{11}"
CLIP_ID = re.compile(rf"({YOUTUBE_ID_PATTERN})_(\d{{6}})")  # always used with fullmatch
YOUTUBE_ID = re.compile(YOUTUBE_ID_PATTERN)
SEGMENTS_ROW = re.compile(rf"({YOUTUBE_ID_PATTERN})\s+(\d+(?:,\d+)*)")  # official YouTube-360 segments.txt
CLIP_SECONDS = 10.0
INVALID_ID = "invalid clip id {!r}: expected <11-character YouTube id>_<6-digit start>"


def parse_clip_id(file_id):
    """Splits a VGGSound-style id into (youtube_id, start_seconds).

    Args:
        file_id: "<11-character YouTube id>_<6-digit start>", e.g. "zpWuikVorYg_000032".

    Returns:
        (ytid: str, start: int).

    Raises:
        ValueError: the id does not have that form (so it can never name a path outside the root).
    """
    match = CLIP_ID.fullmatch(file_id) if isinstance(file_id, str) else None
    if not match:
        raise ValueError(
            f"invalid clip id {file_id!r}: expected <11-character YouTube id>_<6-digit start seconds>, "
            "e.g. zpWuikVorYg_000032"
        )
    return match.group(1), int(match.group(2))


def _ids_from_row(cells):
    """Clip ids in one CSV/TXT row, or (None, reason) when the row names a clip we cannot fetch."""
    cells = [c.strip() for c in cells]
    cells = [c for c in cells if c]
    if not cells or cells[0].startswith("#"):
        return [], None
    found = [c for c in cells if CLIP_ID.fullmatch(c)]
    if found:  # vggss_test.csv (one id), vggsound_duet_test.csv (id,class,id,class)
        return found, None
    if len(cells) >= 3 and YOUTUBE_ID.fullmatch(cells[0]):
        # VGGSound's own csv: ytid,start_seconds,label,split
        start = cells[1]
        if not re.fullmatch(r"\d{1,6}(\.0+)?", start):
            return [], (f"{cells[0]},{start}", f"malformed start {start!r}: expected whole seconds 0..999999")
        return [f"{cells[0]}_{int(float(start)):06d}"], None
    if len(cells) >= 2 and re.fullmatch(r"\d{5,}", cells[0]):
        return [], (cells[0], "Flickr-SoundNet id: not a YouTube clip, the downloader cannot fetch it")
    return [], (cells[0], INVALID_ID.format(cells[0]))


def read_clip_ids(path):
    """Reads the clip ids of an annotation file.

    Accepts a VGG-SS style JSON list (`[{"file": "<ytid>_<start6>", ...}]`), a CSV/TXT with one id per
    row (VGG-SS test lists, VGGSound duet lists `id,class,id,class`) or VGGSound's
    `ytid,start_seconds,label,split` rows, or the official YouTube-360 `segments.txt` (`<ytid> <start>,<start>`
    per video, one clip per start). A header row is ignored.

    Args:
        path: annotation file.

    Returns:
        (ids, invalid): ids in file order without duplicates, and a list of (entry, reason) for entries
        that are not fetchable clip ids.

    Raises:
        AnnotationError: missing or unreadable file, or no ids at all.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: annotation file not found; pass vggss.json or a CSV/TXT list of ids")
    ids, invalid = [], []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read ({err})") from err
    if text.lstrip().startswith(("[", "{")):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{path}: invalid JSON ({err}); fix the file or pass a CSV of ids") from err
        if isinstance(records, dict):
            records = records.get("clips") or records.get("data") or list(records.values())
        for record in records if isinstance(records, list) else []:
            file_id = record.get("file") if isinstance(record, dict) else record
            if not isinstance(file_id, str):
                invalid.append((str(file_id), "entry has no 'file' string"))
            elif CLIP_ID.fullmatch(file_id):
                ids.append(file_id)
            else:
                invalid.append((file_id, INVALID_ID.format(file_id)))
    elif all(SEGMENTS_ROW.fullmatch(line.strip()) for line in text.splitlines()[:50] if line.strip()):
        for line in text.splitlines():  # YouTube-360 `segments.txt`: "<ytid> <start>,<start>,..." (seconds)
            match = SEGMENTS_ROW.fullmatch(line.strip())
            if match:
                ids.extend(f"{match.group(1)}_{int(start):06d}" for start in match.group(2).split(","))
    else:
        lines = text.splitlines()
        comma_separated = any("," in line for line in lines[:50])
        rows = csv.reader(lines) if comma_separated else (line.split() for line in lines)
        for row_number, cells in enumerate(rows):
            found, problem = _ids_from_row(cells)
            ids.extend(found)
            if problem and not (row_number == 0 and not ids and not invalid and not problem[0][:1].isdigit()):
                invalid.append(problem)  # (a non-numeric first row without ids is a header)
    unique = list(dict.fromkeys(ids))
    if not unique and not invalid:
        raise AnnotationError(f"{path}: no clip ids found; expected vggss.json entries or <ytid>_<start6> rows")
    return unique, invalid


def clip_url(url_template, file_id):
    """Fills `{ytid}`, `{start}`, `{end}` and `{id}` in a URL template (plain replacement, no format())."""
    ytid, start = parse_clip_id(file_id)
    fields = {"{ytid}": ytid, "{start}": str(start), "{end}": str(int(start + CLIP_SECONDS)), "{id}": file_id}
    url = url_template
    for key, value in fields.items():
        url = url.replace(key, value)
    return url
