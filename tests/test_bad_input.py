"""Bad input through the real command line: a clear error (exit 2, a message naming the file or option and
the fix) or a counted skip (exit 0, the skip reported) -- never a traceback, a hang or a silent acceptance.

Every case runs `keras_avloc.cli.main` with AVLOC_DEBUG=1, so an unexpected exception is not turned into the
CLI's "internal error" line but fails the case with its traceback. A few cases also run the installed `avloc`
console script in a subprocess with a timeout (tracebacks on stderr and hangs are caught there too).
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from tiny_av_data import write_colour_tone_split

AVLOC = str(Path(sys.executable).with_name("avloc"))


# --------------------------------------------------------------------------- the workspace
def _write_split(root, name, entries):
    (root / f"{name}.json").write_text(json.dumps(entries) if not isinstance(entries, str) else entries)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Every file the cases need: good data, bad media, hostile split files, broken checkpoints."""
    base = tmp_path_factory.mktemp("bad_input")
    good = base / "good"
    entries = write_colour_tone_split(str(good), ("red", "blue"), count=4, size=32, seconds=0.5, split="test",
                                      masks=True)
    write_colour_tone_split(str(good), ("red", "blue"), count=4, size=32, seconds=0.5, split="train", prefix="tr")

    # bad media: 7 bad clips among 3 good ones, in batches of 2 (a split longer than one batch)
    bad = base / "bad_media"
    shutil.copytree(good, bad)
    bad_entries = write_colour_tone_split(str(bad), ("red", "blue"), count=10, size=32, seconds=0.5, split="test")
    frames, audio = bad / "frames", bad / "audio"
    (frames / "clip_00.jpg").write_bytes(b"")                                          # empty image
    data = (frames / "clip_01.jpg").read_bytes()
    (frames / "clip_01.jpg").write_bytes(data[: len(data) // 2])                       # truncated JPEG
    (frames / "clip_02.jpg").write_bytes(os.urandom(300))                              # not an image
    (audio / "clip_03.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")               # corrupt WAV header
    data = (audio / "clip_04.wav").read_bytes()
    (audio / "clip_04.wav").write_bytes(data[: len(data) // 3])                        # truncated WAV
    soundfile.write(str(audio / "clip_05.wav"), np.full(8000, np.nan, np.float32), 16000, subtype="FLOAT")  # NaN
    (audio / "clip_06.wav").unlink()                                                   # missing audio
    (bad / "video").mkdir()

    # hostile and malformed split files, all in one root (chosen with --split)
    hostile = base / "hostile"
    shutil.copytree(good, hostile)
    first = dict(entries[0])
    outside = base / "outside.png"
    cv2.imwrite(str(outside), np.full((32, 32), 255, np.uint8))
    os.symlink(outside, hostile / "masks" / "link.png")
    (hostile / "masks" / "broken.png").write_bytes(b"not a png")
    splits = {
        "id_dotdot": [dict(first, file="../../etc/passwd")],
        "id_absolute": [dict(first, file="/etc/passwd")],
        "id_slash": [dict(first, file="frames/clip_00")],
        "mask_dotdot": [dict(first, mask="../outside.png")],
        "mask_absolute": [dict(first, mask=str(outside))],
        "mask_symlink": [dict(first, mask="masks/link.png")],
        "source_audio": [dict(first, kind="mixture", sources=[{"class": "red", "bbox": first["bbox"],
                                                               "audio": "../../x.wav"}])],
        "box_nan": [dict(first, bbox=[[0.1, float("nan"), 0.5, 0.5]])],
        "box_string": [dict(first, bbox="0.1,0.1,0.5,0.5")],
        "box_short": [dict(first, bbox=[[0.1, 0.1, 0.5]])],
        "box_bool": [dict(first, bbox=[[True, 0.1, 0.5, 0.5]])],
        "duplicate": [entries[0], entries[1], dict(entries[0])],
        "no_file": [{"class": "red", "bbox": []}],
        "not_a_list": {"file": "clip_00"},
        "kind": [dict(first, kind="exploded")],
        "class_number": [dict(first, **{"class": 7})],
        "gt_rule": [dict(first, gt="average")],
        "sources_junk": [dict(first, sources="everything")],
        # the official evaluators score these as they are: counted and reported, not refused
        "degenerate": [dict(entries[0], bbox=[[0.5, 0.5, 0.2, 0.2]], mask=None),
                       dict(entries[1], bbox=[[0.3, 0.3, 0.3, 0.9]], mask=None), entries[2]],
        "mask_unreadable": [dict(entries[0], mask="masks/broken.png"), entries[1]],
    }
    for name, value in splits.items():
        _write_split(hostile, name, value)
    _write_split(hostile, "invalid_json", '[{"file": "clip_00",')
    (hostile / "binary.json").write_bytes(b"\xff\xfe\x00junk")

    # a tiny untrained checkpoint, and broken ones
    from keras_avloc.models import build_model

    model = build_model("lvs", backbone_kwargs={"width": 4}, eval_settings={"image_size": 32, "clip_seconds": 0.5})
    model({"image": np.zeros((1, 32, 32, 3), "float32"), "audio": np.zeros((1, 257, 32, 1), "float32")})
    checkpoints = base / "checkpoints"
    checkpoints.mkdir()
    model.save(str(checkpoints / "model.keras"))
    whole = (checkpoints / "model.keras").read_bytes()
    (checkpoints / "random.keras").write_bytes(os.urandom(2000))
    (checkpoints / "truncated.keras").write_bytes(whole[: len(whole) // 2])
    (checkpoints / "empty.keras").write_bytes(b"")
    with zipfile.ZipFile(checkpoints / "noconfig.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    with zipfile.ZipFile(checkpoints / "badjson.keras", "w") as archive:
        archive.writestr("config.json", "{not json")
    (checkpoints / "folder.keras").mkdir()
    import keras

    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    plain.save(str(checkpoints / "plain.keras"))
    marker = base / "lambda_ran"
    lambda_model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(
        lambda x, path=str(marker): (open(path, "w").close(), x)[1])])
    lambda_model.save(str(checkpoints / "lambda.keras"))
    if marker.exists():
        marker.unlink()  # saving traced the lambda once; only loading must never run it
    (checkpoints / "garbage.weights.h5").write_bytes(os.urandom(500))
    (checkpoints / "bad.npz").write_bytes(os.urandom(500))
    np.savez(checkpoints / "heatmaps_bad_shape.npz", files=np.array(["clip_00"]), heatmaps=np.zeros((2, 7, 7)))
    np.savez(checkpoints / "heatmaps_dup.npz", files=np.array(["clip_00", "clip_00"]), heatmaps=np.zeros((2, 7, 7)))
    (checkpoints / "heatmaps_pickle.npz").write_bytes(b"PK\x03\x04garbage")

    # annotation lists for the downloader (no network: a port nothing listens on)
    lists = base / "lists"
    lists.mkdir()
    (lists / "vggsound.csv").write_text("abcdefghijn,30,owl,test\n"
                                        "abcdefghijk,1234567,dog barking,test\n"
                                        "abcdefghijl,12x,cat,test\n"
                                        "abcdefghijm,-5,cow,test\n")
    (lists / "binary.csv").write_bytes(b"\xff\xfe\x00\x00junk")
    (lists / "empty.csv").write_text("")
    (base / "a_file").write_text("not a folder")
    (base / "videos").mkdir()
    (base / "videos" / "broken.mp4").write_bytes(os.urandom(1000))
    (base / "videos" / "empty.mp4").write_bytes(b"")
    return {"base": base, "good": good, "bad": bad, "hostile": hostile, "ck": checkpoints, "lists": lists,
            "marker": marker, "bad_entries": bad_entries}


def _run(argv, capsys, monkeypatch):
    from keras_avloc.cli import main

    monkeypatch.setenv("AVLOC_DEBUG", "1")  # an unexpected exception fails the case with its traceback
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# --------------------------------------------------------------------------- the table
# (case id, argv with {placeholders}, expected exit code, fragments the output must contain)
EVAL = ["evaluate", "--checkpoint", "{ck}/model.keras", "--no-progress", "--batch-size", "2"]
TRAIN = ["train", "--method", "lvs", "--epochs", "1", "--batch-size", "2", "--image-size", "32",
         "--clip-seconds", "0.5", "--width", "4", "--eager", "--quiet"]
CASES = [
    # ---- unreadable clips: counted skips (or a clean stop with --strict), never a traceback or hang
    ("evaluate-bad-media-skips", EVAL + ["--data", "{bad}", "--out", "{tmp}/e"], 0,
     ["skipped 7 (unreadable clips)", "clip_00", "file is empty"]),
    ("evaluate-bad-media-strict", EVAL + ["--data", "{bad}", "--out", "{tmp}/e", "--strict"], 2,
     ["--strict stops at the first bad sample", "re-extract"]),
    ("to-tfrecord-bad-media-skips", ["data", "to-tfrecord", "{bad}", "{tmp}/shards", "--split", "test"], 0,
     ["skipped 7 bad clip(s)", "clip_00"]),
    ("to-tfrecord-bad-media-strict", ["data", "to-tfrecord", "{bad}", "{tmp}/shards", "--split", "test", "--strict"],
     2, ["file is empty", "drop --strict"]),
    ("localize-empty-image", ["localize", "--checkpoint", "{ck}/model.keras", "--image", "{bad}/frames/clip_00.jpg",
                              "--audio", "{good}/audio/clip_00.wav", "--out", "{tmp}/f.png"], 2, ["file is empty"]),
    ("localize-truncated-image", ["localize", "--checkpoint", "{ck}/model.keras", "--image",
                                  "{bad}/frames/clip_01.jpg", "--audio", "{good}/audio/clip_00.wav", "--out",
                                  "{tmp}/f.png"], 2, ["truncated"]),
    ("localize-corrupt-audio", ["localize", "--checkpoint", "{ck}/model.keras", "--image", "{good}/frames/clip_00.jpg",
                                "--audio", "{bad}/audio/clip_03.wav", "--out", "{tmp}/f.png"], 2, ["clip_03.wav"]),
    ("localize-nan-audio", ["localize", "--checkpoint", "{ck}/model.keras", "--image", "{good}/frames/clip_00.jpg",
                            "--audio", "{bad}/audio/clip_05.wav", "--out", "{tmp}/f.png"], 2, ["NaN"]),
    ("localize-broken-video", ["localize", "--checkpoint", "{ck}/model.keras", "--video", "{base}/videos/broken.mp4",
                               "--out", "{tmp}/v.mp4"], 2, ["broken.mp4", "cannot open video"]),
    ("localize-empty-video", ["localize", "--checkpoint", "{ck}/model.keras", "--video", "{base}/videos/empty.mp4",
                              "--out", "{tmp}/v.mp4"], 2, ["empty.mp4", "empty"]),
    ("extract-bad-videos-counted", ["data", "extract", "{base}/videos", "{tmp}/extracted", "--no-progress"], 0,
     ["bad 2", "skipped.json"]),
    # ---- ids and paths that leave the dataset root: refused with a reason, in every command that reads splits
    *[(f"evaluate-{split}", EVAL + ["--data", "{hostile}", "--split", split, "--out", "{tmp}/e"], 2, fragments)
      for split, fragments in [
          ("id_dotdot", ["invalid clip id '../../etc/passwd'", "refused"]),
          ("id_absolute", ["invalid clip id '/etc/passwd'", "refused"]),
          ("id_slash", ["invalid clip id 'frames/clip_00'"]),
          ("mask_dotdot", ["mask path '../outside.png' contains '..'", "refused"]),
          ("mask_absolute", ["is absolute", "refused"]),
          ("mask_symlink", ["resolves outside the dataset root", "refused"]),
          ("source_audio", ["audio path '../../x.wav' contains '..'"]),
      ]],
    ("train-id-dotdot", TRAIN + ["--data", "{hostile}", "--split", "id_dotdot", "--out", "{tmp}/t"], 2,
     ["invalid clip id", "refused"]),
    ("train-mask-symlink", TRAIN + ["--data", "{hostile}", "--split", "mask_symlink", "--out", "{tmp}/t"], 2,
     ["resolves outside"]),
    ("to-tfrecord-mask-absolute", ["data", "to-tfrecord", "{hostile}", "{tmp}/shards", "--split", "mask_absolute"],
     2, ["is absolute"]),
    ("evaluate-split-name-escapes", EVAL + ["--data", "{hostile}", "--split", "../good/test", "--out", "{tmp}/e"], 2,
     ["split name", "invalid clip id"]),
    # ---- annotations
    ("evaluate-nan-box", EVAL + ["--data", "{hostile}", "--split", "box_nan", "--out", "{tmp}/e"], 2,
     ["box_nan.json entry 0", "NaN"]),
    ("evaluate-string-bbox", EVAL + ["--data", "{hostile}", "--split", "box_string", "--out", "{tmp}/e"], 2,
     ["bbox must be a list"]),
    ("train-string-bbox", TRAIN + ["--data", "{hostile}", "--split", "box_string", "--out", "{tmp}/t"], 2,
     ["bbox must be a list"]),
    ("evaluate-short-box", EVAL + ["--data", "{hostile}", "--split", "box_short", "--out", "{tmp}/e"], 2,
     ["4 numbers"]),
    ("evaluate-bool-box", EVAL + ["--data", "{hostile}", "--split", "box_bool", "--out", "{tmp}/e"], 2,
     ["4 numbers"]),
    ("evaluate-duplicate-ids", EVAL + ["--data", "{hostile}", "--split", "duplicate", "--out", "{tmp}/e"], 2,
     ["duplicate id 'clip_00'", "also entry 0"]),
    ("train-duplicate-ids", TRAIN + ["--data", "{hostile}", "--split", "duplicate", "--out", "{tmp}/t"], 2,
     ["duplicate id"]),
    ("evaluate-entry-without-file", EVAL + ["--data", "{hostile}", "--split", "no_file", "--out", "{tmp}/e"], 2,
     ["has no 'file' key"]),
    ("evaluate-split-not-a-list", EVAL + ["--data", "{hostile}", "--split", "not_a_list", "--out", "{tmp}/e"], 2,
     ["expected a JSON list"]),
    ("evaluate-invalid-json", EVAL + ["--data", "{hostile}", "--split", "invalid_json", "--out", "{tmp}/e"], 2,
     ["not valid JSON"]),
    ("evaluate-binary-split", EVAL + ["--data", "{hostile}", "--split", "binary", "--out", "{tmp}/e"], 2,
     ["not a UTF-8 text file"]),
    ("evaluate-unknown-kind", EVAL + ["--data", "{hostile}", "--split", "kind", "--out", "{tmp}/e"], 2,
     ["unknown kind 'exploded'"]),
    ("evaluate-class-not-string", EVAL + ["--data", "{hostile}", "--split", "class_number", "--out", "{tmp}/e"], 2,
     ["'class' must be a string"]),
    ("evaluate-unknown-gt", EVAL + ["--data", "{hostile}", "--split", "gt_rule", "--out", "{tmp}/e"], 2,
     ["unknown gt 'average'"]),
    ("evaluate-sources-junk", EVAL + ["--data", "{hostile}", "--split", "sources_junk", "--out", "{tmp}/e"], 2,
     ["'sources' must be a list"]),
    ("evaluate-degenerate-boxes-reported", EVAL + ["--data", "{hostile}", "--split", "degenerate", "--protocol",
                                                   "vggss", "--out", "{tmp}/e"], 0,
     ["2 annotated boxes cover no pixel", "2 records have an empty ground truth"]),
    ("evaluate-unreadable-mask", EVAL + ["--data", "{hostile}", "--split", "mask_unreadable", "--protocol", "stamps",
                                         "--out", "{tmp}/e"], 0, ["skipped 1 (ground truth errors)", "broken.png"]),
    ("evaluate-missing-split", EVAL + ["--data", "{good}", "--split", "nope", "--out", "{tmp}/e"], 2,
     ["nope.json: no such split file"]),
    ("download-malformed-rows-counted", ["download", "{lists}/vggsound.csv", "{tmp}/dl", "--url-template",
                                        "http://127.0.0.1:9/{{id}}.mp4", "--retries", "0", "--backoff", "0",
                                        "--no-progress", "--workers", "2"], 0,
     ["missing 4", "(3 invalid ids)", "missing.json"]),
    ("download-binary-list", ["download", "{lists}/binary.csv", "{tmp}/dl2", "--no-progress"], 2, ["cannot read"]),
    ("download-empty-list", ["download", "{lists}/empty.csv", "{tmp}/dl3", "--no-progress"], 2, ["no clip ids found"]),
    ("heatmaps-bad-shape", ["evaluate", "--heatmaps", "{ck}/heatmaps_bad_shape.npz", "--data", "{good}", "--out",
                            "{tmp}/e"], 2, ["N = len(files) = 1"]),
    ("heatmaps-duplicate-files", ["evaluate", "--heatmaps", "{ck}/heatmaps_dup.npz", "--data", "{good}", "--out",
                                  "{tmp}/e"], 2, ["more than once"]),
    ("heatmaps-not-npz", ["evaluate", "--heatmaps", "{ck}/heatmaps_pickle.npz", "--data", "{good}", "--out",
                          "{tmp}/e"], 2, ["not a readable .npz"]),
    # ---- checkpoints and weights: the file and what is wrong with it
    *[(f"evaluate-checkpoint-{name}", ["evaluate", "--checkpoint", f"{{ck}}/{name}.keras", "--data", "{good}",
                                       "--out", "{tmp}/e"], 2, [f"{name}.keras", fragment])
      for name, fragment in [("random", "not a .keras model file"), ("truncated", "not a .keras model file"),
                             ("empty", "not a .keras model file"), ("noconfig", "without config.json"),
                             ("badjson", "damaged"), ("folder", "is a folder"), ("missing", "does not exist"),
                             ("plain", "not a keras-avloc model"), ("lambda", "cannot be loaded")]],
    ("localize-checkpoint-truncated", ["localize", "--checkpoint", "{ck}/truncated.keras", "--image",
                                       "{good}/frames/clip_00.jpg", "--audio", "{good}/audio/clip_00.wav", "--out",
                                       "{tmp}/f.png"], 2, ["truncated.keras", "not a .keras model file"]),
    ("train-garbage-init-weights", TRAIN + ["--data", "{good}", "--split", "train", "--out", "{tmp}/t",
                                            "--init-image-weights", "{ck}/garbage.weights.h5"], 2,
     ["garbage.weights.h5", "does not fit"]),
    ("port-corrupt-npz", ["port-weights", "{ck}/bad.npz", "{tmp}/x.weights.h5"], 2, ["bad.npz", "not a readable"]),
    ("port-wrong-output-name", ["port-weights", "{ck}/bad.npz", "{tmp}/x.h5"], 2, [".weights.h5"]),
    ("port-method-wrong-suffix", ["port-weights", "{ck}/bad.npz", "{tmp}/x.weights.h5", "--method", "lvs"], 2,
     ["name it *.keras"]),
    ("port-unknown-method", ["port-weights", "{ck}/bad.npz", "{tmp}/x.keras", "--method", "nope"], 2,
     ["unknown method 'nope'"]),
    ("port-method-without-official", ["port-weights", "{ck}/bad.npz", "{tmp}/x.keras", "--method", "avgn"], 2,
     ["cannot convert an official checkpoint"]),
    ("port-method-corrupt-file", ["port-weights", "{ck}/bad.npz", "{tmp}/x.keras", "--method", "slavc"], 2,
     ["bad.npz", "not a readable"]),
    # ---- numeric options: range-checked, the option named
    *[(f"range-{argv[0]}{argv[-2]}={argv[-1]}", argv, 2, [f"argument {flag}: must be"])
      for flag, argv in [
          ("--batch-size", ["train", "--batch-size", "0"]), ("--batch-size", ["train", "--batch-size", "1"]),
          ("--image-size", ["train", "--image-size", "0"]), ("--clip-seconds", ["train", "--clip-seconds", "0"]),
          ("--clip-seconds", ["train", "--clip-seconds", "nan"]), ("--epochs", ["train", "--epochs", "0"]),
          ("--lr", ["train", "--lr", "-1"]), ("--width", ["train", "--width", "0"]),
          ("--seed", ["train", "--seed", "-3"]), ("--batch-size", ["evaluate", "--batch-size", "0"]),
          ("--image-size", ["evaluate", "--image-size", "16"]), ("--clip-seconds", ["evaluate", "--clip-seconds", "-1"]),
          ("--retries", ["download", "--retries", "-1"]), ("--backoff", ["download", "--backoff", "-5"]),
          ("--limit", ["download", "--limit", "0"]), ("--workers", ["download", "--workers", "0"]),
          ("--sample-rate", ["data", "extract", "--sample-rate", "0"]),
          ("--workers", ["data", "extract", "--workers", "0"]), ("--shards", ["data", "to-tfrecord", "--shards", "0"]),
          ("--size", ["data", "stamps", "--size", "8"]), ("--n-train", ["data", "stamps", "--n-train", "-1"]),
          ("--workers", ["data", "stamps", "--workers", "0"]), ("--heatmap-fps", ["localize", "--heatmap-fps", "0"]),
          ("--batch-size", ["localize", "--batch-size", "0"]), ("--ogl", ["localize", "--ogl", "2"]),
          ("--image-size", ["localize", "--image-size", "abc"]), ("--epochs", ["demo", "--epochs", "0"]),
          ("--workers", ["demo", "--workers", "0"]), ("--per-word", ["pretrain-audio", "--per-word", "0"]),
          ("--words-per-language", ["pretrain-audio", "--words-per-language", "0"]),
      ]],
    ("train-unknown-method", ["train", "--method", "nope", "--data", "{good}", "--out", "{tmp}/t"], 2,
     ["unknown method 'nope'", "lvs"]),
    ("demo-unknown-method", ["demo", "--methods", "lvs,nope"], 2, ["--methods: unknown ['nope']"]),
    ("demo-sphere-method", ["demo", "--methods", "lvs,avsa"], 2, ["--methods avsa", "separate benchmarks"]),
    ("train-sphere-frames-data", ["train", "--method", "avc", "--data", "{good}", "--out", "{tmp}/t"], 2,
     ["avloc data sphere"]),
    ("evaluate-sphere-frames-model", ["evaluate", "--protocol", "sphere", "--heatmaps", "{tmp}/x.npz", "--data",
                                      "{good}", "--out", "{tmp}/e"], 2, ["--protocol sphere needs --checkpoint"]),
    ("train-init-audio-weights-missing", ["train", "--method", "denseav", "--data", "{good}", "--out", "{tmp}/t",
                                          "--init-audio-weights", "{tmp}/none.weights.h5"], 2,
     ["--init-audio-weights", "none.weights.h5", "avloc pretrain-audio"]),
    ("train-model-options-unknown", ["train", "--method", "denseav", "--data", "{good}", "--out", "{tmp}/t",
                                     "--model-options", '{{"pretrain_step": 0}}'], 2,
     ["pretrain_step is not an argument of DenseAV", "pretrain_steps"]),
    ("train-model-options-not-json", ["train", "--method", "denseav", "--data", "{good}", "--out", "{tmp}/t",
                                      "--model-options", "{{pretrain_steps: 0}}"], 2, ["--model-options: not valid JSON"]),
    ("train-model-options-list", ["train", "--method", "lvs", "--data", "{good}", "--out", "{tmp}/t",
                                  "--model-options", "[1]"], 2, ["must be a JSON object"]),
    ("denseav-missing-speech-split", ["train", "--method", "denseav", "--data", "{good}", "--out", "{tmp}/t",
                                      "--epochs", "1"], 2, ["train_speech.json: no such split file", "drop it"]),
    ("sphere-bad-height", ["data", "sphere", "--out", "{tmp}/s", "--height", "8"], 2, ["--height"]),
    ("evaluate-speech-needs-checkpoint", ["evaluate", "--heatmaps", "{base}/a_file", "--data", "{good}",
                                          "--protocol", "stamps-speech", "--out", "{tmp}/e"], 2, ["needs --checkpoint"]),
    # ---- an --out that is an existing file (or a file --out that is a folder)
    ("out-file-train", TRAIN + ["--data", "{good}", "--out", "{base}/a_file"], 2, ["is an existing file"]),
    ("out-file-evaluate", EVAL + ["--data", "{good}", "--out", "{base}/a_file"], 2, ["is an existing file"]),
    ("out-file-stamps", ["data", "stamps", "--out", "{base}/a_file"], 2, ["is an existing file"]),
    ("out-file-tfrecord", ["data", "to-tfrecord", "{good}", "{base}/a_file", "--split", "test"], 2,
     ["OUT_DIR", "is an existing file"]),
    ("out-file-download", ["download", "{lists}/vggsound.csv", "{base}/a_file"], 2, ["OUT_ROOT", "is an existing file"]),
    ("out-file-extract", ["data", "extract", "{base}/videos", "{base}/a_file"], 2, ["ROOT", "is an existing file"]),
    ("out-file-demo", ["demo", "--out", "{base}/a_file"], 2, ["is an existing file"]),
    ("out-folder-localize", ["localize", "--checkpoint", "{ck}/model.keras", "--image", "{good}/frames/clip_00.jpg",
                             "--audio", "{good}/audio/clip_00.wav", "--out", "{base}/videos"], 2, ["is a folder"]),
    ("out-folder-port", ["port-weights", "{ck}/bad.npz", "{base}/videos"], 2, ["is a folder"]),
]


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input_ends_in_a_clear_error_or_a_counted_skip(case, ws, tmp_path, capsys, monkeypatch):
    name, argv, expected_code, fragments = case
    values = {key: str(value) for key, value in ws.items() if isinstance(value, Path)}
    values["tmp"] = str(tmp_path)
    filled = [part.format(**values) for part in argv]
    code, output = _run(filled, capsys, monkeypatch)
    assert code == expected_code, f"{name}: exit {code}, expected {expected_code}\n{output[-3000:]}"
    for fragment in fragments:
        assert fragment in output, f"{name}: {fragment!r} not in the output:\n{output[-3000:]}"
    assert "Traceback" not in output
    assert not ws["marker"].exists(), "a Lambda layer in a model file ran"


def test_skipped_clips_are_named_in_metrics_json(ws, tmp_path, capsys, monkeypatch):
    code, _ = _run([*(p.format(ck=ws["ck"]) for p in EVAL), "--data", str(ws["bad"]), "--out", str(tmp_path / "e")],
                   capsys, monkeypatch)
    assert code == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["skipped"]["unreadable_clips"] == 7
    assert set(metrics["skipped"]["unreadable_clips_examples"]) == {f"clip_{i:02d}" for i in range(7)}
    assert metrics["model"]["num_samples"] == 3  # the three good clips were scored


def test_the_console_script_never_hangs_or_prints_a_traceback(ws, tmp_path):
    """The real `avloc` process: bad clips over several batches, then an unreadable checkpoint."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([AVLOC, "evaluate", "--checkpoint", str(ws["ck"] / "model.keras"), "--data",
                             str(ws["bad"]), "--out", str(tmp_path / "e"), "--batch-size", "2", "--no-progress"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "skipped 7 (unreadable clips)" in result.stdout
    result = subprocess.run([AVLOC, "evaluate", "--checkpoint", str(ws["ck"] / "truncated.keras"), "--data",
                             str(ws["good"]), "--out", str(tmp_path / "e2")], capture_output=True, text=True,
                            timeout=180, env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "truncated.keras" in result.stderr


def test_an_unexpected_error_is_one_line_asking_for_a_report(capsys, monkeypatch):
    from keras_avloc import cli

    monkeypatch.delenv("AVLOC_DEBUG", raising=False)

    def broken(args):
        raise KeyError("bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    info = parser._subparsers._group_actions[0].choices["info"]
    info.set_defaults(func=broken)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert "internal error: KeyError" in err and "AVLOC_DEBUG=1" in err and "Traceback" not in err
    info.set_defaults(func=lambda args: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert cli.main(["info"]) == 130
    assert "Interrupted" in capsys.readouterr().err


def test_huge_jpeg_is_decoded_at_reduced_size_in_little_memory(tmp_path):
    """A 10000 x 10000 JPEG: `read_image(min_side=...)` (what localize and the pipeline use) decodes it at
    1/8 scale through libjpeg's DCT scaling; a child process measures its peak memory."""
    from PIL import Image

    path = tmp_path / "huge.jpg"
    Image.new("RGB", (10000, 10000), (120, 60, 30)).save(path, quality=50)
    # VmHWM (peak resident memory of this process image; ru_maxrss would carry over pytest's own peak)
    code = ("from keras_avloc.io.media import read_image\n"
            f"image = read_image({str(path)!r}, min_side=224)\n"
            "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0].split()[1]\n"
            "print(image.shape[0], image.shape[1], int(peak) // 1024)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    height, width, peak_mb = (int(v) for v in result.stdout.split())
    assert 448 <= height <= 1250 and width == height
    assert peak_mb < 250, f"peak RSS {peak_mb} MB (a full decode needs 300 MB for the pixels alone)"
    full = __import__("keras_avloc.io.media", fromlist=["read_image"]).read_image(str(path))
    assert full.shape == (10000, 10000, 3)  # without min_side the image is decoded in full, as published
    del full
