"""The downloader (`avloc download`, tools/vggss_dl.py) and `avloc data extract`, fully offline.

A loopback HTTP server (tests/loopback_server.py) stands in for YouTube: it serves a generated 12 s mp4
(frame i has brightness 2 * i, 440 Hz tone) and can answer 404, drop connections or cut transfers, so
the real yt-dlp + ffmpeg code path runs on 127.0.0.1.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from keras_avloc.cli import main
from keras_avloc.data import download
from keras_avloc.io import files, media

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback_server import LoopbackServer  # noqa: E402
from shared_data import SHARED, shared_path  # noqa: E402
from tiny_av_data import write_quad_mp4  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FPS = 10
SOURCE_SECONDS = 12


@pytest.fixture(scope="module")
def source_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("source") / "source.mp4"
    frames = np.stack([np.full((48, 64, 3), 2 * i, np.uint8) for i in range(FPS * SOURCE_SECONDS)])
    t = np.arange(SOURCE_SECONDS * 16000) / 16000
    media.write_video(path, frames, FPS, audio=0.5 * np.sin(2 * np.pi * 440 * t), sample_rate=16000)
    return str(path)


def temp_leftovers(root):
    return [p for p in Path(root).rglob("*") if files.TEMP_MARKER in p.name or p.name.endswith(".part")]


def assert_clip_written(root, file_id, seconds, middle_source_seconds):
    audio = Path(root) / "audio" / f"{file_id}.wav"
    info = soundfile.info(audio)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(info.frames - seconds * 16000) <= 0.05 * 16000
    frame = media.read_image(Path(root) / "frames" / f"{file_id}.jpg")
    # The middle frame of the section shows the source frame at `middle_source_seconds` (brightness 2 * i).
    assert abs(frame.mean() - 2 * FPS * middle_source_seconds) <= 5


# ---------------------------------------------------------------------------------------------------
# Ids and annotation files
# ---------------------------------------------------------------------------------------------------


def test_parse_clip_id_and_url_template():
    assert download.parse_clip_id("zpWuikVorYg_000032") == ("zpWuikVorYg", 32)
    assert download.parse_clip_id("-_-TDDxoaAc_000120") == ("-_-TDDxoaAc", 120)
    for bad in ("../../etc/pa_000001", "zpWuikVorYg_32", "short_000001", "zpWuikVorYg_000032.mp4",
                "zpWuikVor/g_000032", "zpWuikVorYg_000032\n", None):
        with pytest.raises(ValueError):
            download.parse_clip_id(bad)
    url = download.clip_url("http://h/{ytid}/{start}-{end}/{id}.mp4?x={ytid.__class__}", "zpWuikVorYg_000032")
    assert url == "http://h/zpWuikVorYg/32-42/zpWuikVorYg_000032.mp4?x={ytid.__class__}"
    assert download.clip_url(download.DEFAULT_URL_TEMPLATE, "zpWuikVorYg_000032") == (
        "https://www.youtube.com/watch?v=zpWuikVorYg"
    )


def test_read_clip_ids_all_formats(tmp_path):
    vggss = tmp_path / "vggss.json"
    vggss.write_text(json.dumps([
        {"file": "zpWuikVorYg_000032", "class": "elk bugling", "bbox": [[0.1, 0.1, 0.5, 0.5]]},
        {"file": "gEvCUcZ6w88_000030", "class": "speech", "bbox": []},
        {"file": "zpWuikVorYg_000032", "class": "duplicate", "bbox": []},
        {"file": "../../x_000001", "class": "evil", "bbox": []},
    ]))
    ids, invalid = download.read_clip_ids(vggss)
    assert ids == ["zpWuikVorYg_000032", "gEvCUcZ6w88_000030"]
    assert [entry for entry, _ in invalid] == ["../../x_000001"]

    duet = tmp_path / "duet.csv"
    duet.write_text("zpWuikVorYg_000032,elk_bugling,Rtg1SUrxOPY_000130,people_coughing\n")
    assert download.read_clip_ids(duet) == (["zpWuikVorYg_000032", "Rtg1SUrxOPY_000130"], [])

    vggsound = tmp_path / "vggsound.csv"
    vggsound.write_text('---g-f_I2yQ,1,people marching,test\n--0PQM4-hqg,30,"waterfall, burbling",train\n')
    assert download.read_clip_ids(vggsound) == (["---g-f_I2yQ_000001", "--0PQM4-hqg_000030"], [])

    plain = tmp_path / "ids.txt"
    plain.write_text("file\nzpWuikVorYg_000032\n\n  gEvCUcZ6w88_000030  \n")
    assert download.read_clip_ids(plain) == (["zpWuikVorYg_000032", "gEvCUcZ6w88_000030"], [])

    flickr = tmp_path / "flickr.csv"
    flickr.write_text("10000130166,202\n10007936344,0\n")
    ids, invalid = download.read_clip_ids(flickr)
    assert ids == [] and len(invalid) == 2 and "Flickr" in invalid[0][1]

    with pytest.raises(download.AnnotationError, match="not found"):
        download.read_clip_ids(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(download.AnnotationError, match="broken.json"):
        download.read_clip_ids(broken)


def test_read_clip_ids_on_the_real_annotation_files():
    shared_path("annotations", "vggss.json")
    records = json.loads((SHARED / "annotations" / "vggss.json").read_text())
    ids, invalid = download.read_clip_ids(SHARED / "annotations" / "vggss.json")
    assert ids == list(dict.fromkeys(r["file"] for r in records)) and invalid == []

    rows = [line.split(",") for line in (SHARED / "annotations" / "vggsound_duet_test.csv").read_text().split()]
    ids, invalid = download.read_clip_ids(SHARED / "annotations" / "vggsound_duet_test.csv")
    assert ids == list(dict.fromkeys(cell for row in rows for cell in (row[0], row[2]))) and invalid == []

    ids, invalid = download.read_clip_ids(SHARED / "annotations" / "flickr_test.csv")
    assert ids == [] and len(invalid) == len((SHARED / "annotations" / "flickr_test.csv").read_text().split())


def test_error_classification():
    assert download.is_permanent_error("[generic] x: Unable to download webpage: HTTP Error 404: Not Found")
    assert download.is_permanent_error("[youtube] abc: Video unavailable. This video has been removed")
    assert download.is_permanent_error("[youtube] abc: Private video. Sign in if you've been granted access")
    assert not download.is_permanent_error("('Connection aborted.', ConnectionResetError(104, 'reset by peer'))")
    assert not download.is_permanent_error("incomplete download: got 4.90 s of the expected 10.00 s")
    assert not download.is_permanent_error("HTTP Error 503: Service Unavailable")


# ---------------------------------------------------------------------------------------------------
# Downloads over loopback HTTP
# ---------------------------------------------------------------------------------------------------


def test_download_retries_reports_missing_and_resumes(source_mp4, tmp_path):
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join([
        "flaky-aaaaa_000001",  # first request dropped, then served: retried and done
        "ok-bbbbbbbb_000011",  # section [11, 21] of a 12 s video: 1 s of clip
        "gone-cccccc_000001",  # 404: permanent, not retried
        "dead-dddddd_000001",  # every connection dropped: retried, then missing
        "cut-eeeeeee_000001",  # every transfer cut half-way: ffmpeg writes a short clip, detected and retried
        "bad_id",
    ]) + "\n")
    root = tmp_path / "root"
    with LoopbackServer(source_mp4, flaky_failures=1, cut_requests=(2, 10_000)) as server:
        template = server.url + "/auto/{id}.mp4"
        summary = download.download_clips(ids_file, root, url_template=template, workers=2, keep_video=True,
                                          retries=1, backoff=0.01, progress=False)
        assert (summary["done"], summary["skipped"], summary["missing"], summary["invalid"]) == (2, 0, 4, 1)

        assert_clip_written(root, "flaky-aaaaa_000001", seconds=10, middle_source_seconds=6)
        assert_clip_written(root, "ok-bbbbbbbb_000011", seconds=1, middle_source_seconds=11.5)
        assert media.duration_seconds(root / "video" / "flaky-aaaaa_000001.mp4") == pytest.approx(10, abs=0.2)
        missing = {e["file"]: e for e in json.loads((root / "missing.json").read_text())}
        assert set(missing) == {"gone-cccccc_000001", "dead-dddddd_000001", "cut-eeeeeee_000001", "bad_id"}
        assert missing["gone-cccccc_000001"]["permanent"] and "404" in missing["gone-cccccc_000001"]["reason"]
        assert missing["gone-cccccc_000001"]["attempts"] == 1
        assert not missing["dead-dddddd_000001"]["permanent"] and missing["dead-dddddd_000001"]["attempts"] == 2
        assert "incomplete download" in missing["cut-eeeeeee_000001"]["reason"]
        assert missing["bad_id"]["permanent"] and "invalid clip id" in missing["bad_id"]["reason"]
        assert server.requests[("flaky", "flaky-aaaaa_000001.mp4")] >= 2
        for name in ("frames", "audio", "video"):
            assert not any(n.startswith(("gone", "dead", "cut", "bad")) for n in os.listdir(root / name))
        assert temp_leftovers(root) == [] and not (root / ".partial").exists()

        # Re-run: finished and permanently missing clips are not fetched again, transient failures are.
        before = dict(server.requests)
        summary = download.download_clips(ids_file, root, url_template=template, workers=2, retries=0,
                                          backoff=0.01, progress=False, keep_video=True)
        assert (summary["done"], summary["skipped"], summary["missing"]) == (0, 3, 3)
        for key in (("flaky", "flaky-aaaaa_000001.mp4"), ("ok", "ok-bbbbbbbb_000011.mp4"),
                    ("gone", "gone-cccccc_000001.mp4")):
            assert server.requests[key] == before[key]
        assert server.requests[("dead", "dead-dddddd_000001.mp4")] > before[("dead", "dead-dddddd_000001.mp4")]


def test_kill_and_resume(source_mp4, tmp_path):
    file_ids = [f"{letter * 11}_000001" for letter in "abcde"]
    (tmp_path / "ids.txt").write_text("\n".join(file_ids) + "\n")
    root = tmp_path / "root"
    with LoopbackServer(source_mp4, delay=0.15) as server:
        command = [sys.executable, str(REPO / "tools" / "vggss_dl.py"), str(tmp_path / "ids.txt"), str(root),
                   "--url-template", server.url + "/ok/{id}.mp4", "--workers", "1", "--no-progress"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 90
        while time.time() < deadline and process.poll() is None:
            if (root / "frames").is_dir() and any((root / "frames").glob("*.jpg")):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the downloader finished before it could be killed"
        first_run = [i for i in file_ids if media.clip_is_complete(root, i)]
        assert 1 <= len(first_run) < len(file_ids)
        for name in ("frames", "audio"):  # whatever carries a finished name is a finished, valid file
            for path in (root / name).iterdir():
                if files.TEMP_MARKER not in path.name:
                    (media.read_image if name == "frames" else media.read_audio)(path)

        server.set_delay(0.0)
        before = dict(server.requests)
        resumed = subprocess.run(
            [sys.executable, "-m", "keras_avloc", "download", *command[2:]], capture_output=True, text=True,
            timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert f"done {len(file_ids) - len(first_run)}, skipped {len(first_run)}" in resumed.stdout + resumed.stderr
        for file_id in first_run:  # finished clips were not downloaded again
            assert server.requests[("ok", f"{file_id}.mp4")] == before[("ok", f"{file_id}.mp4")]
    for file_id in file_ids:
        assert_clip_written(root, file_id, seconds=10, middle_source_seconds=6)
    assert temp_leftovers(root) == [] and not (root / ".partial").exists()
    assert json.loads((root / "missing.json").read_text()) == []


def test_download_cli_reports_bad_input(tmp_path, capsys):
    assert main(["download", str(tmp_path / "nope.json"), str(tmp_path / "root")]) == 2
    assert "nope.json" in capsys.readouterr().err
    ids = tmp_path / "ids.txt"
    ids.write_text("zpWuikVorYg_000032\n")
    assert main(["download", str(ids), str(tmp_path / "root"), "--url-template", "http://127.0.0.1:1/x.mp4"]) == 2
    assert "{ytid}" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# avloc data extract
# ---------------------------------------------------------------------------------------------------


def test_data_extract_counts_skips_and_resumes(source_mp4, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(source_mp4, videos / "clip_one.mp4")
    shutil.copy(source_mp4, videos / "clip_two.mp4")
    media.write_video(videos / "silent.mp4", np.zeros((5, 48, 64, 3), np.uint8), FPS)
    (videos / "garbage.mp4").write_bytes(os.urandom(2000))
    shutil.copy(source_mp4, videos / "bad name.mp4")
    (videos / "notes.txt").write_text("not a video")
    root = tmp_path / "root"

    assert main(["data", "extract", str(videos), str(root), "--no-progress", "--keep-video"]) == 0
    assert "done 2, skipped 0" in capsys.readouterr().out
    for file_id in ("clip_one", "clip_two"):
        assert_clip_written(root, file_id, seconds=SOURCE_SECONDS, middle_source_seconds=SOURCE_SECONDS / 2)
        assert (root / "video" / f"{file_id}.mp4").exists()
    skipped = {e["file"]: e["reason"] for e in json.loads((root / "skipped.json").read_text())}
    assert set(skipped) == {"silent.mp4", "garbage.mp4", "bad name.mp4"}
    assert "no audio stream" in skipped["silent.mp4"] and "invalid clip id" in skipped["bad name.mp4"]

    (videos / "garbage.mp4").unlink()
    assert main(["data", "extract", str(videos), str(root), "--no-progress", "--keep-video"]) == 0
    assert "done 0, skipped 2 (already present), bad 2" in capsys.readouterr().out
    assert temp_leftovers(root) == []
    assert main(["data", "extract", str(tmp_path / "missing_dir"), str(root)]) == 2


def test_a_vggss_style_json_also_writes_the_split_with_its_boxes(tmp_path):
    from keras_avloc.data.annotations import load_split

    entries = [{"file": "abcdefghijk_000010", "class": "dog", "bbox": [[0.1, 0.2, 0.5, 0.6]]},
               {"file": "abcdefghijl_000020", "class": "cat", "bbox": [[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3]]},
               {"file": "not a clip id", "class": "cow", "bbox": []}]
    (tmp_path / "vggss.json").write_text(json.dumps(entries))
    summary = download.download_clips(str(tmp_path / "vggss.json"), str(tmp_path / "root"), retries=0, backoff=0,
                                      url_template="http://127.0.0.1:9/{id}.mp4", progress=False)
    assert summary["missing"] == 3 and summary["split_path"] == str(tmp_path / "root" / "test.json")
    records = load_split(str(tmp_path / "root"), "test")
    assert [r["file"] for r in records] == ["abcdefghijk_000010", "abcdefghijl_000020"]
    np.testing.assert_allclose(records[1]["boxes"], [[0, 0, 1, 1], [0.2, 0.2, 0.3, 0.3]])
    # an existing split is never overwritten
    (tmp_path / "root" / "test.json").write_text("[]")
    again = download.download_clips(str(tmp_path / "vggss.json"), str(tmp_path / "root"), retries=0, backoff=0,
                                    url_template="http://127.0.0.1:9/{id}.mp4", progress=False)
    assert again["split_path"] is None and (tmp_path / "root" / "test.json").read_text() == "[]"


def test_spatial_downloads_keep_the_ambix_track_and_list_the_clips(source_mp4, tmp_path):
    segments = tmp_path / "segments.txt"
    segments.write_text("ok-aaaaaaaa 1\nok-bbbbbbbb 1,3\n")  # the official YouTube-360 format
    ids, invalid = download.read_clip_ids(segments)
    assert ids == ["ok-aaaaaaaa_000001", "ok-bbbbbbbb_000001", "ok-bbbbbbbb_000003"] and not invalid
    quad = write_quad_mp4(tmp_path / "quad.mp4", fps=FPS)
    root = tmp_path / "yt360"
    with LoopbackServer(quad) as server:
        summary = download.download_clips(segments, root, url_template=server.url + "/auto/{ytid}.mp4", workers=1,
                                          retries=0, progress=False, spatial=True, split="train")
    assert summary["done"] == 3
    info = soundfile.info(root / "audio" / "ok-aaaaaaaa_000001.wav")
    assert (info.samplerate, info.channels) == (24000, 4)
    field, _ = soundfile.read(root / "audio" / "ok-aaaaaaaa_000001.wav")
    assert np.sqrt((field[:, 1] ** 2).mean()) > 0.5 * np.sqrt((field[:, 0] ** 2).mean())  # Y kept, not downmixed
    assert (root / "video" / "ok-aaaaaaaa_000001.mp4").exists()
    assert [r["file"] for r in json.loads((root / "train.json").read_text())] == ids
    # a clip without a spatial track is reported, permanently, and left out of the split
    mono_root = tmp_path / "mono"
    with LoopbackServer(source_mp4) as server:
        summary = download.download_clips(segments, mono_root, url_template=server.url + "/auto/{ytid}.mp4",
                                          workers=1, retries=0, progress=False, spatial=True)
    missing = {e["file"]: e for e in json.loads((mono_root / "missing.json").read_text())}
    assert summary["missing"] == 3 and all(e["permanent"] and "4 expected" in e["reason"] for e in missing.values())
    assert json.loads((mono_root / "train.json").read_text()) == []


def test_sharded_downloads_split_the_ids_once_and_their_reports_merge(source_mp4, tmp_path, capsys):
    ids = [f"ok-bbbbbbb{i}_000001" for i in range(4)] + [f"gone-ccccc{i}_000001" for i in range(4)] + ["bad_id"]
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    # The split: disjoint, complete, independent of the list's order, and the same on every call.
    clip_ids = ids[:-1]
    shards = [download.shard_ids(clip_ids, index, 2) for index in range(2)]
    assert sorted(sum(shards, [])) == sorted(clip_ids) and all(shards)
    assert [download.shard_ids(list(reversed(clip_ids)), 1, 2)[::-1]] == [shards[1]]
    with pytest.raises(ValueError, match="0..N-1"):
        download.check_shard("3/2")
    roots = [tmp_path / f"machine{index}" for index in range(2)]
    with LoopbackServer(source_mp4) as server:
        for index, root in enumerate(roots):  # two machines, each with its own disk
            assert main(["download", str(ids_file), str(root), "--shard", f"{index}/2", "--retries", "0",
                         "--url-template", server.url + "/auto/{id}.mp4", "--no-progress", "--workers", "1"]) == 0
        for index, root in enumerate(roots):
            done = {name[:-4] for name in os.listdir(root / "audio")}
            assert done == {i for i in shards[index] if i.startswith("ok")}
            assert not (root / "missing.json").read_text() == ""
        # Sharing one disk: the shards' reports merge into missing.json as each shard finishes.
        shared = tmp_path / "shared"
        for index in range(2):
            download.download_clips(ids_file, shared, url_template=server.url + "/auto/{id}.mp4", workers=1,
                                    retries=0, progress=False, shard=(index, 2))
    merged = {e["file"] for e in json.loads((shared / "missing.json").read_text())}
    assert merged == {i for i in ids if not i.startswith("ok")}
    assert sorted(name[:-4] for name in os.listdir(shared / "audio")) == sorted(i for i in ids if i.startswith("ok"))
    # Separate disks: the reports copied into one folder merge with --merge-only.
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    for index, root in enumerate(roots):
        (gathered / f"missing-{index}-of-2.json").write_text((root / f"missing-{index}-of-2.json").read_text())
    capsys.readouterr()
    assert main(["download", str(ids_file), str(gathered), "--merge-only"]) == 0
    assert "merged 2 shard reports" in capsys.readouterr().out
    assert {e["file"] for e in json.loads((gathered / "missing.json").read_text())} == merged
    assert main(["download", str(ids_file), str(tmp_path / "empty"), "--merge-only"]) != 0
