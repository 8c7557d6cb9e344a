"""Resumable VGGSound / VGG-SS clip downloader and local video extraction.

One implementation behind `avloc download`, `tools/vggss_dl.py` and `avloc data extract`.

For every clip id `<ytid>_<start6>` the section [start, start + 10 s] is fetched with yt-dlp's Python
API (`download_ranges` + `force_keyframes_at_cuts`, ffmpeg does the cutting) into a private work
folder, then written into the dataset layout with `keras_avloc.io.media.extract_clip`:
    ROOT/frames/<id>.jpg, ROOT/audio/<id>.wav (16 kHz mono PCM16)[, ROOT/video/<id>.mp4]
Outputs are written atomically, so a crash or `kill -9` loses at most the clips in flight; a re-run
skips finished clips and removes the temporaries of dead runs. Unavailable videos (about a fifth of
VGGSound is gone from YouTube) are listed with their reason in ROOT/missing.json.

Example:
    >>> summary = download_clips("vggss.json", "datasets/vggss", workers=4)  # doctest: +SKIP
    >>> summary["done"], summary["skipped"], summary["missing"]  # doctest: +SKIP
"""

import concurrent.futures
import contextlib
import glob
import hashlib
import json
import os
import random
import re
import shutil
import sys
import threading
import time

from keras_avloc.data.annotations import AnnotationError
from keras_avloc.data.clip_ids import (  # noqa: F401 - re-exported: the clip ids live there
    CLIP_ID, CLIP_SECONDS, INVALID_ID, SEGMENTS_ROW, YOUTUBE_ID, YOUTUBE_ID_PATTERN, clip_url, parse_clip_id, read_clip_ids,
)
from keras_avloc.io import media
from keras_avloc.io.files import pid_alive, remove_stale_temp_files, write_json

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={ytid}"
DEFAULT_FORMAT = "bv*[height<=?480]+ba/b[height<=?480]/bv*+ba/b"
SPATIAL_FORMAT = "bv*[height<=?1440]+ba[audio_channels>=4]/bv*[height<=?1440]+ba/bv*+ba/b"
"""360° clips (`--spatial`): the equirectangular video and, where YouTube offers one, the 4-channel spatial
(first-order ambisonic) audio track; a clip that comes without it is reported missing (4 channels expected)."""
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".flv")
PARTIAL_DIR = ".partial"

# Lower-case fragments of yt-dlp / extraction errors that will not go away by retrying.
PERMANENT_ERRORS = (
    "video unavailable",
    "private video",
    "has been removed",
    "been terminated",
    "no longer available",
    "is not available",
    "not available in your country",
    "copyright",
    "confirm your age",
    "members-only",
    "join this channel",
    "http error 404",
    "http error 410",
    "unsupported url",
    "no video formats found",
    "requested format is not available",
    "has no audio stream",
    "has no video stream",
    "beyond the end of the video",
    "4 expected",
)


def is_permanent_error(message):
    """True for errors retrying cannot fix (removed/private/404 videos, clips without sound)."""
    lowered = message.lower()
    return any(fragment in lowered for fragment in PERMANENT_ERRORS)


# --------------------------------------------------------------------------------------------------
# Fetching one clip
# --------------------------------------------------------------------------------------------------


class _CollectingLogger:
    """yt-dlp logger that stays quiet and keeps the last error for the missing report."""

    def __init__(self):
        self.errors = []

    def debug(self, message):
        pass

    info = warning = debug

    def error(self, message):
        self.errors.append(message)


def _clean_error(message):
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(message)).strip()
    message = re.sub(r"^ERROR:\s*", "", message)
    return message[:500]


def fetch_section(url, start, end, workdir, format_selector=DEFAULT_FORMAT, socket_timeout=30.0):
    """Downloads [start, end] seconds of a video with yt-dlp into `workdir`.

    Returns:
        (path of the downloaded file, yt-dlp info dict).

    Raises:
        RuntimeError: with yt-dlp's error message when the download fails.
    """
    import yt_dlp
    from yt_dlp.utils import download_range_func

    logger = _CollectingLogger()
    options = {
        "format": format_selector,
        "outtmpl": os.path.join(workdir, "clip.%(ext)s"),
        "download_ranges": download_range_func(None, [(float(start), float(end))]),
        "force_keyframes_at_cuts": True,
        "merge_output_format": "mp4",
        "noplaylist": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": logger,
        "cachedir": False,
        "overwrites": True,
        "continuedl": False,
        "retries": 1,
        "fragment_retries": 1,
        "socket_timeout": socket_timeout,
        "ignoreerrors": False,
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
    except yt_dlp.utils.YoutubeDLError as err:
        raise RuntimeError(_clean_error(logger.errors[-1] if logger.errors else err)) from err
    candidates = [d.get("filepath") for d in (info or {}).get("requested_downloads") or []]
    candidates += [os.path.join(workdir, n) for n in sorted(os.listdir(workdir))]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and not candidate.endswith((".part", ".ytdl", ".temp")):
            if os.path.getsize(candidate) > 0:
                return candidate, info or {}
    raise RuntimeError(f"yt-dlp finished but wrote no file for {url}")


def check_section_complete(path, info, url, start, end):
    """Raises RuntimeError when the fetched section is shorter than the source allows.

    ffmpeg ends a section early and still exits cleanly when the connection drops mid-transfer, so the
    length is checked against the source duration (from yt-dlp, else probed from a direct media URL).
    """
    source_duration = info.get("duration")
    if not source_duration and url.startswith(("http://", "https://")) and info.get("extractor") == "generic":
        with contextlib.suppress(media.MediaError):
            source_duration = media.duration_seconds(url)
    if not source_duration:
        return
    expected = min(float(end), float(source_duration)) - float(start)
    if expected <= 0:
        raise RuntimeError(
            f"clip is not available: start {start} s is beyond the end of the video ({source_duration:.1f} s)"
        )
    got = media.duration_seconds(path) or 0.0
    if got < expected - max(0.5, 0.05 * expected):
        raise RuntimeError(f"incomplete download: got {got:.2f} s of the expected {expected:.2f} s")


def _work_dir(root, file_id):
    return os.path.join(root, PARTIAL_DIR, f"{file_id}.{os.getpid()}.{threading.get_ident()}")


def download_clip(
    file_id,
    root,
    url_template=DEFAULT_URL_TEMPLATE,
    keep_video=False,
    retries=3,
    backoff=2.0,
    format_selector=DEFAULT_FORMAT,
    sample_rate=16000,
    channels=1,
):
    """Fetches one clip and writes it into the layout, retrying transient failures with backoff.

    Args:
        file_id: "<ytid>_<start6>".
        root: dataset root.
        url_template: URL with `{ytid}` (and optionally `{id}`, `{start}`, `{end}`).
        keep_video: also keep ROOT/video/<id>.mp4.
        retries: extra attempts after the first for transient errors (dropped connections, timeouts).
        backoff: seconds before the first retry; doubles on every retry (with jitter).
        format_selector: yt-dlp format string.
        sample_rate: audio rate written to ROOT/audio.
        channels: 1 (mono) or 4 (a 360° clip's ambiX track, `spatial=True` of `download_clips`).

    Returns:
        dict {"file", "status": "done"|"missing", "reason", "permanent", "attempts", "url"}.
    """
    try:
        _, start = parse_clip_id(file_id)
        url = clip_url(url_template, file_id)
    except ValueError as err:  # never raise from a worker thread: the clip is reported instead
        return {"file": str(file_id), "status": "missing", "reason": str(err), "permanent": True, "attempts": 0,
                "url": None}
    root = os.path.abspath(os.fspath(root))
    workdir = _work_dir(root, file_id)
    reason, permanent, attempt = "", False, 0
    for attempt in range(1, int(retries) + 2):
        shutil.rmtree(workdir, ignore_errors=True)
        os.makedirs(workdir)
        try:
            path, info = fetch_section(url, start, start + CLIP_SECONDS, workdir, format_selector)
            check_section_complete(path, info, url, start, start + CLIP_SECONDS)
            media.extract_clip(path, root, file_id, keep_video=keep_video, sample_rate=sample_rate, channels=channels)
            return {"file": file_id, "status": "done", "attempts": attempt, "url": url}
        except Exception as err:  # noqa: BLE001 - one bad clip must not stop the run; it is reported
            reason = _clean_error(err if isinstance(err, (RuntimeError, media.MediaError)) else repr(err))
            permanent = is_permanent_error(reason)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if permanent:
            break
        if attempt <= retries:
            time.sleep(backoff * (2 ** (attempt - 1)) * (1.0 + 0.25 * random.random()))
    if not permanent:
        reason = f"failed after {attempt} attempts: {reason}"
    return {"file": file_id, "status": "missing", "reason": reason, "permanent": permanent, "attempts": attempt,
            "url": url}


# --------------------------------------------------------------------------------------------------
# Resumable batch runs
# --------------------------------------------------------------------------------------------------


def _read_report(path):
    """{file: entry} from a missing.json / skipped.json; an unreadable report is ignored."""
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
        return {e["file"]: e for e in entries if isinstance(e, dict) and "file" in e}
    except (OSError, ValueError, TypeError):
        return {}


def clean_stale_partials(root):
    """Removes work folders and atomic-write temporaries left by killed runs. Returns how many."""
    root = os.path.abspath(os.fspath(root))
    removed = 0
    partial = os.path.join(root, PARTIAL_DIR)
    if os.path.isdir(partial):
        for name in os.listdir(partial):
            parts = name.split(".")
            pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
            if pid is not None and pid_alive(pid):
                continue
            shutil.rmtree(os.path.join(partial, name), ignore_errors=True)
            removed += 1
        with contextlib.suppress(OSError):
            os.rmdir(partial)
    for sub in ("frames", "audio", "video", ""):
        removed += remove_stale_temp_files(os.path.join(root, sub))
    return removed


def _progress(total, description, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="clip", disable=not enabled, dynamic_ncols=True)


def download_clips(
    annotations,
    root,
    url_template=DEFAULT_URL_TEMPLATE,
    workers=4,
    keep_video=False,
    limit=None,
    retries=3,
    backoff=2.0,
    retry_missing=False,
    format_selector=DEFAULT_FORMAT,
    progress=True,
    spatial=False,
    split="train",
    shard=None,
):
    """Downloads every clip of an annotation file into `root`, resumably and in parallel.

    Finished clips (all outputs present) are skipped; clips listed in ROOT/missing.json as permanently
    unavailable are skipped unless `retry_missing`; transient failures are retried on the next run.

    Args:
        annotations: vggss.json or a CSV/TXT list of ids (see `read_clip_ids`).
        root: output dataset root.
        url_template: where to fetch `{ytid}` from (default the YouTube watch URL).
        workers: parallel downloads.
        keep_video: also keep ROOT/video/<id>.mp4.
        limit: only the first `limit` ids of the file.
        retries, backoff: see `download_clip`.
        retry_missing: try again clips already reported as permanently missing.
        format_selector: yt-dlp format string.
        progress: show a tqdm bar.
        spatial: 360° clips (YouTube-360, AVC / AVSA): keep the equirectangular video, write the 4-channel ambiX
            track at 24 kHz (`SPATIAL_FORMAT` unless another `format_selector` is given; clips without a
            spatial track are reported missing), and list the finished clips in ROOT/<split>.json.
        split: the split file a spatial download writes.
        shard: (index, count): only the ids `shard_ids` gives shard `index` of `count` (0-based), for one of
            `count` machines; its report is ROOT/missing-<index>-of-<count>.json, and ROOT/missing.json is rewritten
            as the merge of every shard report found in ROOT (`merge_reports`), so machines sharing ROOT end with
            one report. Machines with their own roots merge theirs with `merge_reports` (`avloc download
            --merge-only`).

    Returns:
        dict with counts "done", "skipped" (already present), "missing" (this run, incl. invalid ids),
        "invalid", "total", and "missing_path".
    """
    ids, invalid = read_clip_ids(annotations)
    all_ids = ids
    if shard is not None:
        index, count = check_shard(shard)
        ids = shard_ids(ids, index, count)
        invalid = invalid if index == 0 else []  # malformed rows are reported once, by shard 0
    sample_rate, channels = (24000, 4) if spatial else (16000, 1)
    if spatial:
        keep_video = True
        format_selector = SPATIAL_FORMAT if format_selector == DEFAULT_FORMAT else format_selector
    if limit is not None:
        ids = ids[: max(0, int(limit))]
    if "{ytid}" not in url_template and "{id}" not in url_template:
        raise AnnotationError(f"--url-template {url_template!r} must contain {{ytid}} or {{id}}")
    root = os.path.abspath(os.fspath(root))
    os.makedirs(root, exist_ok=True)
    clean_stale_partials(root)
    missing_path = os.path.join(root, "missing.json")
    report = _read_report(missing_path)
    if shard is not None:
        mine = set(ids)
        report = {key: entry for key, entry in report.items() if key in mine}
        missing_path = shard_report_path(root, index, count)
        report.update(_read_report(missing_path))
    for entry, reason in invalid:
        report[entry] = {"file": entry, "reason": reason, "permanent": True, "attempts": 0}

    pending, skipped = [], 0
    for file_id in ids:
        if media.clip_is_complete(root, file_id, keep_video):
            skipped += 1
            report.pop(file_id, None)
        elif report.get(file_id, {}).get("permanent") and not retry_missing:
            skipped += 1
        else:
            pending.append(file_id)

    counts = {"done": 0, "missing": len(invalid)}

    def save_report():
        write_json(missing_path, sorted(report.values(), key=lambda e: e["file"]))

    save_report()
    bar = _progress(len(ids), "download", progress)
    bar.update(skipped)
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(workers)))
    try:
        futures = {
            executor.submit(download_clip, file_id, root, url_template, keep_video, retries, backoff,
                            format_selector, sample_rate, channels): file_id
            for file_id in pending
        }
        for future in concurrent.futures.as_completed(futures):
            file_id = futures[future]
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - a bug in one clip's worker must not abort the whole run
                result = {"file": file_id, "status": "missing", "reason": f"internal error: {err!r}",
                          "permanent": False, "attempts": 0}
            if result["status"] == "done":
                counts["done"] += 1
                if report.pop(result["file"], None) is not None:
                    save_report()
            else:
                counts["missing"] += 1
                report[result["file"]] = {k: v for k, v in result.items() if k != "status"}
                save_report()
            bar.update(1)
            bar.set_postfix(done=counts["done"], skipped=skipped, missing=counts["missing"])
    finally:
        bar.close()
        # On Ctrl-C, queued clips are cancelled and in-flight ones finish (or die) on their own.
        executor.shutdown(wait=sys.exc_info()[0] is None, cancel_futures=True)
        save_report()
        if shard is not None:
            merge_reports(sorted(glob.glob(os.path.join(root, f"missing-*-of-{count}.json"))),
                          os.path.join(root, "missing.json"))
        if sys.exc_info()[0] is None:
            clean_stale_partials(root)
    return {
        "done": counts["done"],
        "skipped": skipped,
        "missing": counts["missing"],
        "invalid": len(invalid),
        "total": len(ids) + len(invalid),
        "missing_path": missing_path,
        # A shard lists every clip of the file found complete in ROOT (all shards' when they share it).
        "split_path": (write_sphere_split(all_ids, root, split) if spatial else
                       write_annotated_split(annotations, root)),
    }


def check_shard(shard):
    """(index, count) from a tuple or "I/N" (0 <= I < N); raises AnnotationError naming the fix."""
    try:
        index, count = (str(shard).split("/") if isinstance(shard, str) else shard)
        index, count = int(index), int(count)
    except (TypeError, ValueError):
        raise AnnotationError(f"--shard {shard!r}: expected I/N, e.g. 0/4 (machine I of N, counting from 0)") from None
    if count < 1 or not 0 <= index < count:
        raise AnnotationError(f"--shard {index}/{count}: I must be in 0..N-1 (e.g. 0/{max(count, 1)} .. "
                              f"{max(count, 1) - 1}/{max(count, 1)})")
    return index, count


def shard_ids(ids, index, count):
    """The ids of shard `index` of `count`: those whose SHA-256 falls in it (deterministic on every machine,
    whatever the order of the list, and stable when ids are added)."""
    def owner(file_id):
        return int(hashlib.sha256(str(file_id).encode()).hexdigest()[:16], 16) % int(count)

    return [file_id for file_id in ids if owner(file_id) == int(index)]


def shard_report_path(root, index, count):
    return os.path.join(root, f"missing-{int(index)}-of-{int(count)}.json")


def merge_reports(paths, out_path):
    """Merges missing-report files (missing.json / missing-I-of-N.json) into `out_path`; a clip listed twice keeps
    the entry with more attempts. Returns the number of entries written."""
    merged = {}
    for path in paths:
        for key, entry in _read_report(path).items():
            if key not in merged or int(entry.get("attempts", 0)) >= int(merged[key].get("attempts", 0)):
                merged[key] = entry
    write_json(out_path, sorted(merged.values(), key=lambda e: e["file"]))
    return len(merged)


def write_sphere_split(ids, root, split="train"):
    """Writes ROOT/<split>.json listing the downloaded 360° clips among `ids` (kind "sphere"); returns its path."""
    from keras_avloc.data.annotations import split_path

    done = [file_id for file_id in ids if media.clip_is_complete(root, file_id, keep_video=True)]
    path = split_path(root, split)
    write_json(path, [{"file": file_id, "kind": "sphere"} for file_id in done])
    return path


def write_annotated_split(annotations, root, split="test"):
    """Writes `ROOT/<split>.json` from a VGG-SS-style annotation file (entries with boxes), unless it exists.

    So that `avloc download vggss.json ROOT` leaves a dataset `avloc evaluate --data ROOT` scores directly
    (clips that could not be downloaded are skipped and counted there). Entries whose id is not a clip id are
    left out, as the download leaves them out.

    Returns:
        The path written, or None (an id list without boxes, or the split file already exists).
    """
    from keras_avloc.data.annotations import read_vggss_json, split_path, write_split

    path = split_path(root, split)
    if os.path.exists(path) or not str(annotations).lower().endswith(".json"):
        return None
    try:
        records = read_vggss_json(annotations)
    except AnnotationError:
        return None
    records = [record for record in records if CLIP_ID.fullmatch(record["file"])]
    if not records or not any(len(record["boxes"]) for record in records):
        return None
    write_split(records, path)
    return path


def _local_videos(video_dir):
    video_dir = os.fspath(video_dir)
    if not os.path.isdir(video_dir):
        raise AnnotationError(f"{video_dir}: not a folder; pass the folder that holds your .mp4 files")
    names = sorted(n for n in os.listdir(video_dir) if n.lower().endswith(VIDEO_EXTENSIONS) and not n.startswith("."))
    return [os.path.join(video_dir, n) for n in names]


def extract_videos(video_dir, root, keep_video=False, workers=2, sample_rate=16000, progress=True):
    """Extracts middle frames and 16 kHz audio from every local video in `video_dir` into `root`.

    The clip id is the file name without extension. Finished clips are skipped (resumable); bad files
    are counted and listed with their reason in ROOT/skipped.json.

    Args:
        video_dir: folder with .mp4 (or .mkv/.webm/.mov/.avi) files.
        root: output dataset root.
        keep_video: also copy each video to ROOT/video/<id>.mp4.
        workers: parallel extraction threads.
        sample_rate: output audio rate.
        progress: show a tqdm bar.

    Returns:
        dict with counts "done", "skipped" (already present), "bad" (see skipped.json), "total",
        and "skipped_path".
    """
    videos = _local_videos(video_dir)
    if not videos:
        raise AnnotationError(f"{video_dir}: no video files ({', '.join(VIDEO_EXTENSIONS)}) found")
    root = os.path.abspath(os.fspath(root))
    os.makedirs(root, exist_ok=True)
    clean_stale_partials(root)
    skipped_path = os.path.join(root, "skipped.json")
    names = {os.path.basename(v) for v in videos}
    report = {name: entry for name, entry in _read_report(skipped_path).items() if name in names}
    counts = {"done": 0, "skipped": 0, "bad": 0}
    pending = []
    for path in videos:
        name = os.path.basename(path)
        file_id = os.path.splitext(name)[0]
        try:
            media.check_file_id(file_id)
        except media.MediaError as err:
            counts["bad"] += 1
            report[name] = {"file": name, "reason": str(err)}
            continue
        if media.clip_is_complete(root, file_id, keep_video):
            counts["skipped"] += 1
            report.pop(name, None)
        else:
            pending.append((path, file_id))

    def extract(item):
        path, file_id = item
        try:
            media.extract_clip(path, root, file_id, keep_video=keep_video, sample_rate=sample_rate)
            return item, None
        except media.MediaError as err:
            return item, str(err)
        except Exception as err:  # noqa: BLE001 - counted as a skip with its reason, the run goes on
            return item, f"{path}: {err!r}"

    bar = _progress(len(videos), "extract", progress)
    bar.update(counts["skipped"] + counts["bad"])
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, int(workers))) as executor:
            for (path, _), error in executor.map(extract, pending):
                name = os.path.basename(path)
                if error is None:
                    counts["done"] += 1
                    report.pop(name, None)
                else:
                    counts["bad"] += 1
                    report[name] = {"file": name, "reason": error}
                bar.update(1)
                bar.set_postfix(done=counts["done"], skipped=counts["skipped"], bad=counts["bad"])
    finally:
        bar.close()
        write_json(skipped_path, sorted(report.values(), key=lambda e: e["file"]))
    return {**counts, "total": len(videos), "skipped_path": skipped_path}
