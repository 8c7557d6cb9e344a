"""End-to-end tests of the "stamps" benchmark builder on the real Debian media (tiny build, 64 px).

The media packages are required (CI installs them with tools/setup.sh): when they are missing these
tests fail with the command to run, they never skip.
"""

import filecmp
import functools
import json
import os
import wave

import cv2
import numpy as np
import pytest
import soundfile

from keras_avloc.data import stamps as stamps_module
from keras_avloc.data import stamps_catalog

TINY = dict(n_train=6, n_val=2, n_test=4, n_test_mix=2, n_test_ext=4, n_speech=2, size=64, seed=3)
SPLITS = ("train", "val", "test", "test_mix", "test_ext", "test_speech")


def _build_or_fail(out, **kwargs):
    try:
        return stamps_module.build_stamps(out, progress=False, **kwargs)
    except stamps_module.MediaMissingError as err:
        pytest.fail(f"stamps media missing, run `bash tools/setup.sh`: {err}")


@pytest.fixture(scope="module")
def catalog_info():
    try:
        return stamps_module.load_catalog()
    except stamps_module.MediaMissingError as err:
        pytest.fail(f"stamps media missing, run `bash tools/setup.sh`: {err}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("stamps_a"))
    summary = _build_or_fail(root, workers=1, **TINY)
    return root, summary


def _records(root, split):
    with open(os.path.join(root, f"{split}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def _read_mask(root, rel):
    mask = cv2.imread(os.path.join(root, rel), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8 and mask.ndim == 2, rel
    return mask > 127


def _reference_box(mask):
    rows = np.where(mask.any(axis=1))[0]
    cols = np.where(mask.any(axis=0))[0]
    height, width = mask.shape
    return np.array([cols[0] / width, rows[0] / height, (cols[-1] + 1) / width, (rows[-1] + 1) / height])


def _read_wav(path):
    with wave.open(path, "rb") as handle:
        assert handle.getnchannels() == 1 and handle.getsampwidth() == 2
        assert handle.getframerate() == 16000
        data = np.frombuffer(handle.readframes(handle.getnframes()), np.int16)
    return data.astype(np.float64) / 32768.0


def test_layout_and_summary(built):
    root, summary = built
    classes = json.load(open(os.path.join(root, "classes.json"), encoding="utf-8"))
    assert classes == sorted(classes) and len(classes) >= 40
    on_disk = json.load(open(os.path.join(root, "summary.json"), encoding="utf-8"))
    for split in SPLITS:
        records = _records(root, split)
        expected = {"test_mix": 2, "test_ext": 4, "test_speech": 2}.get(split, TINY.get(f"n_{split}"))
        assert len(records) == expected == on_disk["splits"][split]["scenes"]
        for record in records:
            assert record["class"] in classes
            image = cv2.imread(os.path.join(root, "frames", record["file"] + ".jpg"))
            assert image.shape == (64, 64, 3)
            audio = _read_wav(os.path.join(root, "audio", record["file"] + ".wav"))
            assert audio.shape == (48000,)
            assert 0.85 < np.abs(audio).max() <= 0.91  # peak-normalised to 0.9
    counts = on_disk["splits"]["train"]["class_counts"]
    assert sum(counts.values()) == TINY["n_train"]
    assert counts == summary["splits"]["train"]["class_counts"]
    assert len(counts) == TINY["n_train"]  # balanced: 6 scenes -> 6 different classes


def test_masks_match_boxes_and_objects(built):
    root, _ = built
    for split in ("train", "val", "test", "test_speech"):
        for record in _records(root, split):
            mask = _read_mask(root, record["mask"])
            assert mask.any()
            np.testing.assert_allclose(record["bbox"][0], _reference_box(mask), atol=1e-6)
            sounding = [o for o in record["scene"]["objects"] if o["sounding"]]
            assert [o["class"] for o in sounding] == [record["class"]]
            others = {o["class"] for o in record["scene"]["objects"]} - {record["class"]}
            assert len(others) == len(record["scene"]["objects"]) - 1  # distractors of other classes
            maximum = 4 if split == "test_speech" else 3
            assert 2 <= len(record["scene"]["objects"]) <= maximum


def test_mixtures_have_two_sources_that_sum_to_the_mix(built):
    root, _ = built
    for record in _records(root, "test_mix"):
        assert record["kind"] == "mixture" and len(record["sources"]) == 2
        classes = [s["class"] for s in record["sources"]]
        assert len(set(classes)) == 2 and record["class"] == classes[0]
        union = _read_mask(root, record["mask"])
        sources = []
        for source, box in zip(record["sources"], record["bbox"]):
            mask = _read_mask(root, source["mask"])
            assert mask.any() and not (mask & ~union).any()
            np.testing.assert_allclose(source["bbox"][0], _reference_box(mask), atol=1e-6)
            np.testing.assert_allclose(box, source["bbox"][0])
            sources.append(_read_wav(os.path.join(root, source["audio"])))
        mix = _read_wav(os.path.join(root, "audio", record["file"] + ".wav"))
        np.testing.assert_allclose(sources[0] + sources[1], mix, atol=3.0 / 32768)
        level_db = 20 * np.log10(np.sqrt(np.mean(sources[1] ** 2)) / np.sqrt(np.mean(sources[0] ** 2)))
        assert -5.1 <= level_db <= 5.1


def test_extended_protocol_negatives(built):
    root, _ = built
    kinds = {}
    for record in _records(root, "test_ext"):
        kinds.setdefault(record["kind"], []).append(record)
        pictured = {o["class"] for o in record["scene"]["objects"]}
        if record["kind"] == "silent":
            assert record["bbox"] == [] and "mask" not in record
            assert record["class"] not in pictured
        elif record["kind"] == "offscreen":
            visible, hidden = record["sources"]
            assert visible["class"] in pictured and hidden["class"] not in pictured
            assert hidden["offscreen"] and hidden["bbox"] == []
            np.testing.assert_allclose(record["bbox"][0], _reference_box(_read_mask(root, record["mask"])),
                                       atol=1e-6)
    assert sorted(kinds) == ["offscreen", "silent", "single"]


def test_backgrounds_are_disjoint_between_train_val_and_test(built):
    root, summary = built
    used = {split: {r["scene"]["background"] for r in _records(root, split)} for split in SPLITS}
    train_val = used["train"] | used["val"]
    test_like = used["test"] | used["test_mix"] | used["test_ext"] | used["test_speech"]
    assert not train_val & test_like
    listed = summary["backgrounds"]
    assert not set(listed["train"]) & set(listed["test"]) and not set(listed["val"]) & set(listed["test"])
    assert len(listed["train"]) + len(listed["val"]) + len(listed["test"]) >= 50
    for name in listed["train"] + listed["test"]:
        assert name.endswith(".jpg") and os.path.splitext(os.path.basename(name))[0] not in (
            "party-room", "room1", "room2", "room3", "spotlight-stage", "woods-and-bench", "school2")


@functools.lru_cache(maxsize=None)
def _resampled_recording(media_id, stamps_dir, scratch):
    from math import gcd

    from scipy.signal import resample_poly  # a different resampler from the builder's (libsoxr)

    source, rel = media_id.split(":", 1)
    path = os.path.join(stamps_dir if source == "tuxpaint" else scratch, rel)
    data, rate = soundfile.read(path, dtype="float64", always_2d=True)
    divisor = gcd(rate, 16000)
    return resample_poly(data.mean(axis=1), 16000 // divisor, rate // divisor)


def _best_normalised_correlation(chunk, reference):
    """max over lags of the normalised cross-correlation of `chunk` against `reference`."""
    n = len(chunk)
    if len(reference) < n:
        return 0.0
    chunk = chunk - chunk.mean()
    size = 1 << int(np.ceil(np.log2(len(reference) + n)))
    dots = np.fft.irfft(np.fft.rfft(reference, size) * np.conj(np.fft.rfft(chunk, size)), size)
    dots = dots[: len(reference) - n + 1]
    cumsum = np.concatenate([[0.0], np.cumsum(reference)])
    cumsq = np.concatenate([[0.0], np.cumsum(reference ** 2)])
    sums = cumsum[n:] - cumsum[:-n]
    energy = np.maximum(cumsq[n:] - cumsq[:-n] - sums ** 2 / n, 1e-12)
    return float(np.max(dots / np.sqrt(energy * np.sum(chunk ** 2))))


def _contiguous_chunk(audio, segment_length, offset, looped, length=1000):
    """The loudest `length`-sample window of `audio` that does not straddle a loop point."""
    best, best_energy = None, -1.0
    for start in range(0, len(audio) - length, 250):
        if looped:
            first = (offset + start) % segment_length
            if first + length > segment_length:
                continue
        energy = float(np.sum(audio[start: start + length] ** 2))
        if energy > best_energy:
            best, best_energy = audio[start: start + length], energy
    return best


def test_sounding_object_plays_its_own_recording(built, catalog_info):
    root, _ = built
    info = catalog_info
    class_of_stamp = dict(stamps_catalog.STAMPS)
    checked = 0
    for split in ("train", "test"):
        for record in _records(root, split):
            (audio_info,) = record["scene"]["audio"]
            recording = audio_info["recording"]
            if recording.startswith("tuxpaint:"):
                assert class_of_stamp[recording[len("tuxpaint:"): -len(".ogg")]] == record["class"]
            else:
                extra = (recording[len("scratch:Sounds/"):], record["class"])
                assert extra in stamps_catalog.EXTRA_RECORDINGS
            unseen = {r["id"] for r in info["recordings"] if r["unseen"]}
            assert recording not in unseen  # unseen recordings are kept for val_unseen / test_unseen
            audio = _read_wav(os.path.join(root, "audio", record["file"] + ".wav"))
            start, stop = audio_info["segment"]
            chunk = _contiguous_chunk(audio, stop - start, audio_info["offset"], stop - start < 48000)
            own = _resampled_recording(recording, info["stamps_dir"], info["scratch"])
            score = _best_normalised_correlation(chunk, own)
            others = [r["id"] for r in info["recordings"] if r["class"] != record["class"]][:3]
            other_scores = [_best_normalised_correlation(
                chunk, _resampled_recording(o, info["stamps_dir"], info["scratch"])) for o in others]
            assert score > 0.95, (record["file"], recording, score)
            assert score > max(other_scores) + 0.05, (record["file"], score, other_scores)
            checked += 1
    assert checked == TINY["n_train"] + TINY["n_test"]


def test_train_and_test_use_different_parts_of_each_recording(built):
    root, _ = built
    train_parts, test_parts = {}, {}
    for split, parts in (("train", train_parts), ("test", test_parts), ("val", test_parts)):
        for record in _records(root, split):
            for item in record["scene"]["audio"]:
                parts.setdefault(item["recording"], set()).add(tuple(item["segment"]))
    media = stamps_module.MediaCache(*stamps_module.check_media())
    for recording, segments in train_parts.items():
        trimmed, cut = media.recording(recording)
        if cut is None:
            continue  # single short event: used whole everywhere (documented)
        assert segments == {(0, cut)}
        assert test_parts.get(recording, {(cut, len(trimmed))}) == {(cut, len(trimmed))}


def test_same_seed_is_byte_identical_and_a_rerun_resumes(built, tmp_path, capsys):
    from keras_avloc.cli import main

    root, _ = built
    other = str(tmp_path / "stamps_b")
    argv = ["data", "stamps", "--out", other, "--n-train", "6", "--n-val", "2", "--n-test", "4",
            "--n-mix", "2", "--n-ext", "4", "--speech", "--n-speech", "2", "--size", "64", "--seed", "3",
            "--workers", "2"]
    assert main(argv) == 0
    assert "scenes" in capsys.readouterr().out
    for split in SPLITS + ("classes", "summary"):
        assert filecmp.cmp(os.path.join(root, f"{split}.json"), os.path.join(other, f"{split}.json"),
                           shallow=False), split
    for folder in ("frames", "audio", "masks"):
        names = sorted(os.listdir(os.path.join(root, folder)))
        assert names == sorted(os.listdir(os.path.join(other, folder)))
        match, mismatch, errors = filecmp.cmpfiles(os.path.join(root, folder), os.path.join(other, folder),
                                                   names, shallow=False)
        assert not mismatch and not errors
    again = _build_or_fail(root, workers=1, **TINY)
    assert again["built"] == 0 and again["skipped"] == sum(len(_records(root, s)) for s in SPLITS)
    changed = dict(TINY, seed=4)
    with pytest.raises(stamps_module.OtherBuildError, match="--overwrite"):
        stamps_module.build_stamps(root, progress=False, **changed)


def test_catalog_rule_selects_photo_stamps(catalog_info):
    info = catalog_info
    dropped = {d["stamp"] for d in info["dropped"]}
    assert {"animals/insects/bee", "animals/lizards/iguana", "household/dishes/glass"} <= dropped
    assert len(info["stamps"]) >= 70
    assert {"giraffe", "wombat", "rhea"} <= set(info["distractor_classes"])  # their .ogg is silence
    assert not set(info["distractor_classes"]) & set(info["classes"])
    for item in info["recordings"]:
        source, rel = item["id"].split(":", 1)
        path = os.path.join(info["stamps_dir"] if source == "tuxpaint" else info["scratch"], rel)
        assert np.abs(soundfile.read(path)[0]).max() > 0.01, path
    for entry in info["stamps"][:: 10]:
        rgba = cv2.imread(os.path.join(info["stamps_dir"], entry["stamp"] + ".png"), cv2.IMREAD_UNCHANGED)
        opaque = rgba[rgba[..., 3] > 127][:, :3]
        assert len({tuple(p) for p in opaque.tolist()}) >= 1000


def test_missing_media_names_the_fix(tmp_path):
    with pytest.raises(stamps_module.MediaMissingError, match="tuxpaint-stamps-default.*tools/setup.sh"):
        stamps_module.build_stamps(str(tmp_path / "x"), stamps_dir=str(tmp_path / "none"), progress=False)
    with pytest.raises(stamps_module.MediaMissingError, match="tools/setup.sh"):
        stamps_module.build_stamps(str(tmp_path / "x"), media_dir=str(tmp_path / "none"), progress=False)


def test_ambience_is_added_at_10_to_20_db_snr(built, tmp_path):
    root, _ = built
    noisy_root = str(tmp_path / "ambience")
    _build_or_fail(noisy_root, workers=1, **dict(TINY, n_train=1, n_val=0, n_test=0, n_test_mix=0,
                                                 n_test_ext=0, n_speech=0), ambience=True)
    (record,) = _records(noisy_root, "train")
    assert record["scene"]["ambience"]["recording"].startswith("scratch:Sounds/")
    # Same seed and index: the same scene and the same clean clip, now with ambience underneath.
    clean = _read_wav(os.path.join(root, "audio", "train_00000.wav"))
    noisy = _read_wav(os.path.join(noisy_root, "audio", "train_00000.wav"))
    scale = np.dot(noisy, clean) / np.dot(clean, clean)
    residual = noisy - scale * clean
    snr_db = 10 * np.log10(np.sum((scale * clean) ** 2) / np.sum(residual ** 2))
    assert 9.5 <= snr_db <= 20.5, snr_db


def test_class_subset_sounds_only_those_classes(tmp_path, catalog_info):
    chosen = ["cello", "frog", "zebra"]
    recording_class = {item["id"]: item["class"] for item in catalog_info["recordings"]}
    root = str(tmp_path / "subset")
    summary = _build_or_fail(root, n_train=6, n_val=0, n_test=3, n_test_mix=2, n_test_ext=4, n_speech=0,
                             size=64, seed=1, classes=chosen)
    assert summary["classes"] == chosen
    with open(os.path.join(root, "classes.json"), encoding="utf-8") as handle:
        assert json.load(handle) == chosen
    for split in ("train", "test", "test_mix", "test_ext"):
        for record in _records(root, split):
            sounding = [o["class"] for o in record["scene"]["objects"] if o["sounding"]]
            assert set(sounding) <= set(chosen), (split, record["file"])
            for clip in record["scene"]["audio"]:
                assert recording_class[clip["recording"]] in chosen, (split, record["file"], clip)
    assert {name for name in catalog_info["classes"] if name not in chosen} <= set(summary["distractor_classes"])
    with pytest.raises(ValueError, match="unicorn.*choose at least 2 of: .*cello"):
        stamps_module.build_stamps(str(tmp_path / "bad"), progress=False, classes=["cello", "unicorn"])


def test_unseen_recordings_are_heard_only_in_the_unseen_splits(tmp_path, catalog_info):
    """A class with k >= 2 distinct recordings keeps max(1, k // 3) unseen, the scratch package's first; the
    unseen splits use only those (whole, on val / test backgrounds), the other splits never do."""
    by_class = {}
    for recording in catalog_info["recordings"]:
        by_class.setdefault(recording["class"], []).append(recording)
    for class_name, items in by_class.items():
        unseen = [r for r in items if r["unseen"]]
        assert len(unseen) == (max(1, len(items) // 3) if len(items) >= 2 else 0), class_name
        scratch = [r for r in items if r["id"].startswith("scratch:")]
        if scratch and unseen:
            assert all(r["id"].startswith("scratch:") for r in unseen[: len(scratch)])
    ids = {r["id"] for r in catalog_info["recordings"]}
    for duplicate in stamps_catalog.DUPLICATE_RECORDINGS:
        assert f"tuxpaint:{duplicate}.ogg" not in ids  # the same waveform under another name is not a recording
    classes = ["chicken", "dog", "drum kit", "owl"]
    root = str(tmp_path / "unseen")
    summary = _build_or_fail(root, n_train=8, n_val=4, n_test=4, n_test_mix=0, n_test_ext=0, n_val_unseen=8,
                             n_test_unseen=4, size=64, seed=1, classes=classes)
    unseen_ids = set(summary["unseen_recordings"])
    assert unseen_ids and {r.split(":")[0] for r in unseen_ids} <= {"scratch", "tuxpaint"}
    backgrounds = summary["backgrounds"]
    for split in ("train", "val", "test", "val_unseen", "test_unseen"):
        for record in _records(root, split):
            heard = {item["recording"] for item in record["scene"]["audio"]}
            assert bool(heard & unseen_ids) == split.endswith("_unseen"), (split, heard)
            assert record["class"] in classes
            expected = {"val_unseen": "val", "test_unseen": "test"}.get(split, split)
            assert record["scene"]["background"] in backgrounds[expected]
            if split.endswith("_unseen"):
                (item,) = record["scene"]["audio"]
                assert item["segment"][0] == 0  # unseen recordings are used whole
    assert summary["splits"]["val_unseen"]["scenes"] == 8


def test_unseen_splits_need_classes_with_a_second_recording(tmp_path):
    with pytest.raises(stamps_module.StampsError, match="second recording"):
        _build_or_fail(str(tmp_path / "x"), n_train=2, n_val=0, n_test=0, n_test_mix=0, n_test_ext=0,
                       n_val_unseen=2, size=64, classes=["frog", "zebra"])
