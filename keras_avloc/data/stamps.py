"""The "stamps" benchmark: real photo cut-outs on real background photos, each with its own recording.

No public localisation benchmark can be downloaded offline, so `build_stamps` composes one with exact
ground truth from two Debian packages:

* `tuxpaint-stamps-default`: photo cut-outs with alpha (animals, instruments, tools, ...) that ship
  their own real recording (`name.ogg`) and, for many animals, a spoken description (`name_desc.ogg`).
  The curated list and the photo rule live in `keras_avloc.data.stamps_catalog`.
* `scratch` (unpacked, not installed): real background photos and a few extra real recordings.

Every scene is a pure function of `(seed, split, index)`, so builds are byte-identical for a seed,
resumable (finished scenes are skipped) and independent of the number of workers.

Splits written under `out` (standard layout: frames/, audio/, masks/, <split>.json):
  train, val, test             one sounding object + 1-2 silent distractors of other classes
  val_unseen, test_unseen      as val / test, but every clip is a recording training never hears (see below)
  train_mix, test_mix          two sounding objects of different classes, audio summed at +-5 dB
  test_ext                     the extended protocol: single positives, "silent" scenes (the audio's
                               class is not in the picture) and "offscreen" scenes (a visible source
                               plus an off-screen one)
  test_speech (optional)       2-4 objects and a spoken prompt naming one of them: the stamp's real English
                               description (`name_desc.ogg`), or espeak-ng ("a picture of a hen") without one
  train_speech, val_speech     the same kind of scene for training (DenseAV's speech pairs): real descriptions in
                               the SEEN_LANGUAGES (`name_desc_<lang>.ogg`) and espeak-ng English in several voices
                               and rates; the real English descriptions stay for test_speech
  test_speech_unseen           spoken prompts in languages no other split uses (UNSEEN_LANGUAGES): cross-lingual
  train_mosaic, val_mosaic,    CSOL's "synthetic" protocol: 2 x 2 mosaics of four solo frames (four classes),
  test_mosaic                  two of which sound (audio = their two recordings at +-5 dB), two visible but silent
  test_duet                    CSOL's realistic protocol: two sounding objects and 1-2 silent ones in one frame
  val_interf, test_interf      IEr's interferences, one scenario per scene (INTERFERENCE_SCENARIOS, in turn): two
                               sounding objects at a source-level difference of 0, +-6, +-12 or +-20 dB; an
                               audible class that is not in the frame; visible but silent objects of sounding
                               classes; and all three combined
Speech records carry "prompt" (the text), "language" and "speech" ([start, end] seconds of the prompt).
Interference records carry "scenario" and "interference" {"level_db", "offscreen", "silent"}, with
"level_db" on each source's provenance; their "sources" include the off-screen one ("offscreen": true, no box).
Mosaic, duet and interference records list every visible object in "objects" (class, bbox, mask, sounding); their silent
objects are of sounding classes (heard in other scenes), so a class-aware model has a map to keep quiet.
Backgrounds of train, val and test* are disjoint. A class with several distinct recordings keeps some of
them "unseen" (`assign_unseen_recordings`: a third of them, at least one, preferring the scratch package's
recordings, i.e. another source): they are heard only in val_unseen / test_unseen. The other ("seen")
recordings are trimmed and cut at a quiet point near 60% of their length: train scenes use the first part,
val/test scenes the rest; seen recordings shorter than `MIN_SPLIT_SECONDS` (single short events) are used
whole everywhere.
"""

import hashlib
import json
import os
import shutil
import time

import numpy as np

from keras_avloc.data import stamps_variety
from keras_avloc.data.stamps_compose import (  # noqa: F401 - re-exported: the scene composition helpers
    TRAIN_VOICES, _choose_recording, _clip_from, _compose, _compose_mosaic, _other_classes, _patch_size, _pick,
    _prepare_object, _recording_clip, _render_background, _rms, _spoken_prompt, _stamps_of, _write_jpg, _write_wav,
    mask_box, visible_masks,
)
from keras_avloc.data.stamps_media import (  # noqa: F401 - re-exported: the media of the benchmark
    MIN_SPLIT_SECONDS, SAMPLE_RATE, SEEN_LANGUAGES, UNSEEN_LANGUAGES, MediaCache, MediaMissingError, OtherBuildError,
    StampsError, assign_unseen_recordings, check_media, decode_audio, load_catalog, media_root, trim_and_split,
    unseen_classes,
)
from keras_avloc.data.stamps_plan import (  # noqa: F401 - re-exported: the split table and the scene plan
    CASTS, EXTENDED_KINDS, INTERFERENCE_SCENARIOS, MULTI_OBJECT_KINDS, SPLIT_AUDIO_PART, SPLIT_BACKGROUNDS,
    SPLIT_FRACTIONS, SPLIT_LANGUAGES, SPLIT_ORDER, SPLITS, Split, _scene_rng, balanced_class, interference_plan,
    scene_kind, split_backgrounds,
)
from keras_avloc.io import files, media as media_io

CLIP_SECONDS = 3.0
BUILDER_VERSION = 3  # 2: recordings decoded by keras_avloc.io.media.read_audio (clipped to [-1, 1] after resampling);
# 3: the recording set (duplicates dropped, scratch recordings in training) and the unseen recordings
PEAK_LEVEL = 0.9


# ---------------------------------------------------------------------------------------------------
# Rendering one scene (runs in worker processes).

_WORKER = {}


def _init_worker(catalog_info, options):
    _WORKER["catalog"] = catalog_info
    _WORKER["options"] = options
    _WORKER["media"] = MediaCache(catalog_info["stamps_dir"], catalog_info["scratch"])


def _scene_background(media, options, split, kind, settings, narrow, rng):
    """(name, kind, image or None) of a scene's background; a mosaic renders one per cell later."""
    pool = options["backgrounds"][SPLIT_BACKGROUNDS[split]]
    name = _pick(pool, rng)
    # A mosaic renders one background per cell; the others one for the frame (same draws as before).
    background_kind = "photo" if narrow or kind == "mosaic" else stamps_variety.draw_kind(rng, settings["backgrounds"])
    if kind == "mosaic":
        return name, background_kind, None
    if background_kind == "photo":
        return name, background_kind, _render_background(media, name, options["size"], rng)
    if background_kind == "ood":
        path = _pick(options["ood_backgrounds"][SPLIT_BACKGROUNDS[split]], rng)
        return "/".join(path.split(os.sep)[-2:]), background_kind, stamps_variety.file_background(
            path, options["size"], rng, media.files)
    render = stamps_variety.texture_background if background_kind == "texture" else stamps_variety.plain_background
    return background_kind, background_kind, render(options["size"], rng)


def _scene_audio(media, info, options, settings, scene, split, part, rng):
    """(mixture, per-source clips, provenance, ambience) of a scene; levels relative to the first source."""
    length = int(round(CLIP_SECONDS * SAMPLE_RATE))
    provenance, clips = [], []
    if scene["kind"] == "speech":
        main_class = scene["main_class"]
        wave, prompt, prompt_source, language = _spoken_prompt(media, scene["stamps"][main_class], main_class,
                                                               SPLIT_LANGUAGES[split], rng)
        wave = wave[: length]
        start = int(rng.integers(0, length - len(wave) + 1))
        clip = np.zeros(length, np.float32)
        clip[start: start + len(wave)] = wave / max(float(np.max(np.abs(wave))), 1e-9)
        clips.append(clip)
        provenance.append({"recording": prompt_source, "prompt": prompt, "offset": start, "language": language,
                           "samples": len(wave)})
    else:
        for class_name in scene["audio_classes"]:
            recording = _choose_recording(info, class_name, part, rng)
            clip, meta = _recording_clip(media, recording, part, length, rng)
            if settings["partial_silence"] and rng.random() < settings["partial_silence"]:
                clip = stamps_variety.partly_silent(clip, rng, SAMPLE_RATE)
                meta["partly_silent"] = True
            clips.append(clip)
            provenance.append(meta)
    plan = scene["plan"]
    if scene["kind"] == "interference":
        # The second on-screen source at the scenario's level, an off-screen one at 0 dB, relative to the first.
        levels = ([plan[1]] if plan[2] == 2 else []) + [0.0] * plan[3]
        for number, level_db in enumerate(levels, start=1):
            clips[number] = clips[number] * (_rms(clips[0]) / _rms(clips[number])) * 10 ** (level_db / 20.0)
            provenance[number]["level_db"] = round(level_db, 3)
    elif len(clips) == 2:
        level_db = float(rng.uniform(-5.0, 5.0))
        clips[1] = clips[1] * (_rms(clips[0]) / _rms(clips[1])) * 10 ** (level_db / 20.0)
        provenance[1]["level_db"] = round(level_db, 3)
    mix = np.sum(clips, axis=0)
    ambience = None
    snr_range = None
    if options["ambience"] and info["ambience"]:
        snr_range = (10.0, 20.0)
    elif settings["ambience"] and info["ambience"] and rng.random() < settings["ambience"]:
        snr_range = settings["ambience_snr_db"]
    if snr_range is not None:
        rel = _pick(info["ambience"], rng)
        noise, _ = _clip_from(media.ambience(rel), length, rng)
        snr_db = float(rng.uniform(*snr_range))
        mix = mix + noise * (_rms(mix) / _rms(noise)) * 10 ** (-snr_db / 20.0)
        ambience = {"recording": "scratch:Sounds/" + rel, "snr_db": round(snr_db, 3)}
    return mix, clips, provenance, ambience


def _annotate(root, file_id, scene, clips, gain):
    """Writes the masks (and per-source audio) of a scene and returns its annotation record."""
    kind, main_class, mask_of, sounding = scene["kind"], scene["main_class"], scene["mask_of"], scene["sounding"]
    record = {"file": file_id, "class": main_class, "bbox": []}
    if kind == "silent":
        pass
    elif kind in ("mixture", "offscreen") + MULTI_OBJECT_KINDS:
        sources = []
        for number, (class_name, clip) in enumerate(zip(scene["audio_classes"], clips)):
            source_id = f"{file_id}_s{number}"
            _write_wav(os.path.join(root, "audio", source_id + ".wav"), clip * gain)
            source = {"class": class_name, "bbox": [], "audio": f"audio/{source_id}.wav"}
            if class_name in mask_of:
                media_io.write_png(os.path.join(root, "masks", source_id + ".png"), mask_of[class_name])
                source["bbox"] = [mask_box(mask_of[class_name])]
                source["mask"] = f"masks/{source_id}.png"
            else:
                source["offscreen"] = True
            sources.append(source)
        on_screen = [mask_of[c] for c in sounding]
        record["bbox"] = [mask_box(m) for m in on_screen]
        media_io.write_png(os.path.join(root, "masks", file_id + ".png"), np.any(on_screen, axis=0))
        record["mask"] = f"masks/{file_id}.png"
        record["sources"] = sources
        if kind in MULTI_OBJECT_KINDS:
            source_mask = {source["class"]: source["mask"] for source in sources if "mask" in source}
            objects = []
            for number, class_name in enumerate(scene["draw_order"]):
                if class_name in source_mask:
                    mask_path = source_mask[class_name]
                else:
                    mask_path = f"masks/{file_id}_o{number}.png"
                    media_io.write_png(os.path.join(root, mask_path), mask_of[class_name])
                objects.append({"class": class_name, "bbox": [mask_box(mask_of[class_name])], "mask": mask_path,
                                "sounding": class_name in sounding})
            record["objects"] = objects
    else:
        media_io.write_png(os.path.join(root, "masks", file_id + ".png"), mask_of[main_class])
        record["bbox"] = [mask_box(mask_of[main_class])]
        record["mask"] = f"masks/{file_id}.png"
    record["kind"] = kind
    return record


def render_scene(task):
    """Builds and writes one scene; returns its annotation record (a pure function of the task).

    Every random draw comes from the scene's own generator, in this order: the background, the cast (who is in
    the picture and who sounds), the stamps, the drawing order and placement, the audio, the level.
    """
    split, index = task
    info, options, media = _WORKER["catalog"], _WORKER["options"], _WORKER["media"]
    root, size, seed = options["root"], options["size"], options["seed"]
    rng = _scene_rng(seed, split, index)
    kind = scene_kind(split, index)
    part = SPLIT_AUDIO_PART[split]
    file_id = f"{split}_{index:05d}"
    settings = stamps_variety.recipe(split, options.get("variety", "narrow"))
    narrow = settings is stamps_variety.VARIETY["narrow"]
    background_name, background_kind, background = _scene_background(media, options, split, kind, settings, narrow,
                                                                      rng)
    main_class = balanced_class(unseen_classes(info) if part == "unseen" else info["classes"], seed, split, index)
    sounding, visible, plan, offscreen = CASTS[kind](info, kind, main_class, index, settings, rng)
    stamps = {c: _pick([s for s in _stamps_of(info, c) if s["sounding"] or c not in sounding], rng)
              for c in visible}
    draw_order = [visible[int(i)] for i in rng.permutation(len(visible))]
    flags = [c in sounding for c in draw_order]
    if kind == "mosaic":
        cells = [background_name] + [_pick(options["backgrounds"][SPLIT_BACKGROUNDS[split]], rng) for _ in range(3)]
        image, masks = _compose_mosaic(media, cells, [stamps[c]["stamp"] for c in draw_order], flags, size, rng)
    else:
        image, masks = _compose(media, background, [stamps[c]["stamp"] for c in draw_order], size, rng,
                                sounding=flags, settings=settings)
    # Who is heard: the sounding objects, plus (drawn after the picture) an off-screen class.
    audio_classes = [main_class] if kind == "silent" else sounding + offscreen
    if kind == "offscreen":
        audio_classes = sounding + _other_classes(info["classes"], visible, 1, rng)
    scene = {"kind": kind, "main_class": main_class, "sounding": sounding, "audio_classes": audio_classes,
             "plan": plan, "stamps": stamps, "draw_order": draw_order, "mask_of": dict(zip(draw_order, masks))}

    # Audio: one peak-normalised clip per sounding source, summed at +-5 dB for two sources.
    mix, clips, provenance, ambience = _scene_audio(media, info, options, settings, scene, split, part, rng)
    gain, level_dbfs = stamps_variety.level_gain(mix, rng, settings, PEAK_LEVEL)
    for folder in ("frames", "audio", "masks"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    _write_jpg(os.path.join(root, "frames", file_id + ".jpg"), image, quality=settings.get("jpeg_quality", 95))
    _write_wav(os.path.join(root, "audio", file_id + ".wav"), mix * gain)

    record = _annotate(root, file_id, scene, clips, gain)
    if kind == "interference":
        record["scenario"] = plan[0]
        record["interference"] = {"level_db": plan[1], "offscreen": list(offscreen),
                                  "silent": [c for c in visible if c not in sounding]}
    if kind == "speech":
        record["prompt"] = provenance[0]["prompt"]
        record["language"] = provenance[0]["language"]
        start = provenance[0]["offset"]
        record["speech"] = [round(start / SAMPLE_RATE, 4), round((start + provenance[0]["samples"]) / SAMPLE_RATE, 4)]
    record["scene"] = {
        "background": background_name,
        "objects": [{"class": c, "stamp": stamps[c]["stamp"], "sounding": c in sounding} for c in draw_order],
        "audio": provenance,
        "ambience": ambience,
    }
    if not narrow:
        record["scene"].update(background_kind=background_kind, level_dbfs=level_dbfs,
                               recipe="second" if split.endswith("_ood") else options["variety"])
    files.write_bytes(os.path.join(root, ".parts", split, file_id + ".json"), json.dumps(record, sort_keys=False).encode())
    return record


# ---------------------------------------------------------------------------------------------------
# The build driver.


def _write_json(path, value):
    files.write_json(path, value, indent=1)


def _remove_stale_temp_files(out, splits):
    """Deletes the temporaries an interrupted build left (their writers are gone)."""
    folders = [os.path.join(out, f) for f in ("frames", "audio", "masks", ".parts", "")]
    folders += [os.path.join(out, ".parts", split) for split in splits]
    for folder in folders:
        files.remove_stale_temp_files(folder)


def finished_scenes(out, counts, id_format="{split}_{index:05d}"):
    """The records of the scenes already built in `out/.parts/<split>/` and the (split, index) tasks still to do.

    Returns:
        ({split: [record or None] * count}, [(split, index), ...]).
    """
    records = {split: [None] * count for split, count in counts.items()}
    todo = []
    for split, count in counts.items():
        for index in range(count):
            part = os.path.join(out, ".parts", split, id_format.format(split=split, index=index) + ".json")
            try:
                with open(part, encoding="utf-8") as handle:
                    records[split][index] = json.load(handle)
            except (OSError, ValueError):
                todo.append((split, index))
    return records, todo


def restrict_classes(info, classes):
    """The catalog `info` with only `classes` sounding (the other classes become distractor classes)."""
    if classes is None:
        return info
    wanted = sorted({str(name).strip() for name in classes if str(name).strip()})
    unknown = [name for name in wanted if name not in info["classes"]]
    if unknown or len(wanted) < 2:
        raise StampsError(
            f"stamps classes: {unknown or wanted} {'are not sounding classes' if unknown else 'is fewer than 2 classes'}; "
            f"choose at least 2 of: {', '.join(info['classes'])}.")
    others = set(info["classes"]) - set(wanted)
    return dict(info, classes=wanted,
                distractor_classes=sorted(set(info["distractor_classes"]) | others),
                recordings=[r for r in info["recordings"] if r["class"] in wanted])


def _params_fingerprint(options, info):
    key = {"version": BUILDER_VERSION, "size": options["size"], "seed": options["seed"],
           "ambience": options["ambience"], "classes": info["classes"],
           "stamps": [s["stamp"] for s in info["stamps"]], "backgrounds": info["backgrounds"]}
    if options["variety"] != "narrow":  # builds of the first recipe keep their fingerprint
        key["variety"] = options["variety"]
    return key, hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build_stamps(out, n_train=2000, n_val=200, n_test=500, n_test_mix=200, n_train_mix=0,
                 n_test_ext=200, n_speech=0, size=224, seed=0, workers=1, ambience=False,
                 overwrite=False, stamps_dir=None, media_dir=None, progress=True, classes=None, n_val_unseen=0,
                 n_test_unseen=0, n_train_mosaic=0, n_val_mosaic=0, n_test_mosaic=0, n_test_duet=0, n_train_speech=0,
                 n_val_speech=0, n_test_speech_unseen=0, n_val_interf=0, n_test_interf=0, variety="narrow",
                 n_val_ood=0, n_test_ood=0):
    """Builds (or resumes) the stamps benchmark in `out`.

    Args:
        out: output root; gets frames/, audio/, masks/, <split>.json, classes.json, summary.json.
        n_train, n_val, n_test: single-source scenes per split.
        n_test_mix, n_train_mix: two-source mixture scenes (`test_mix.json`, `train_mix.json`).
        n_test_ext: extended-protocol scenes (`test_ext.json`: half single, a quarter "silent",
            a quarter "offscreen").
        n_speech: spoken-prompt scenes (`test_speech.json`); 0 skips the split.
        size: square frame side in pixels.
        seed: everything random derives from (seed, split, scene index).
        workers: processes rendering scenes in parallel (the output does not depend on it).
        ambience: add a real ambience recording at 10-20 dB SNR to every clip.
        overwrite: rebuild `out` when it was built with another seed/size/media.
        stamps_dir, media_dir: override the Tux Paint stamps folder and the folder holding scratch/.
        progress: show a tqdm progress bar.
        classes: optional subset of the sounding classes (names as in `classes.json`); only these
            sound, every other photo stamp may still appear as a silent distractor. None = all.
        n_val_unseen, n_test_unseen: scenes of `val_unseen.json` / `test_unseen.json`: val / test
            backgrounds, and recordings training never hears (only classes that have some, see
            `assign_unseen_recordings`; 0 skips the split).
        n_train_mosaic, n_val_mosaic, n_test_mosaic: CSOL's 2 x 2 mosaics (two of four objects sound); they
            need at least 4 sounding classes.
        n_test_duet: CSOL's realistic duets (two sounding objects, 1-2 silent ones; at least 4 classes).
        n_train_speech, n_val_speech, n_test_speech_unseen: spoken-prompt scenes for training, validation and
            the unseen-language test (DenseAV; see the module docstring).
        n_val_interf, n_test_interf: IEr's interference scenes (`INTERFERENCE_SCENARIOS`; at least 4 classes).
        variety: "narrow" (the first recipe) or "wide" (domain-randomised train / val / test / *_unseen scenes:
            `keras_avloc.data.stamps_variety.VARIETY`).
        n_val_ood, n_test_ood: scenes of the second recipe (`stamps_variety.OOD_RECIPE`): other backgrounds,
            compositing and levels, and only recordings training never hears (needs the Debian packages
            `mate-backgrounds` and `mypaint-data-extras`).

    Returns:
        The summary dict (also written to `out/summary.json` without the timing fields):
        "classes", "splits" {split: {"scenes", "class_counts"}}, "backgrounds" {train/val/test},
        "stamps" (selected count), "dropped_stamps", "recordings", plus "built", "skipped",
        "seconds" and "scenes_per_second".

    Example:
        >>> summary = build_stamps("/tmp/stamps", n_train=6, n_val=2, n_test=4, n_test_mix=2,
        ...                        n_test_ext=4, size=64)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    started = time.time()
    info = restrict_classes(load_catalog(stamps_dir, media_dir), classes)
    out = os.path.abspath(os.path.expanduser(out))
    variety_name = str(variety)
    stamps_variety.recipe("train", variety_name)  # refuses an unknown name
    options = {"root": out, "size": int(size), "seed": int(seed), "ambience": bool(ambience),
               "backgrounds": split_backgrounds(info["backgrounds"], seed), "variety": variety_name}
    if n_val_ood or n_test_ood:
        found = stamps_variety.ood_backgrounds()
        if len(found) < 3:
            raise MediaMissingError(
                f"val_ood / test_ood need the backgrounds of the Debian packages {stamps_variety.OOD_PACKAGES} "
                f"(found {len(found)} images under {', '.join(stamps_variety.OOD_BACKGROUND_DIRS)}); install them "
                f"with `sudo apt-get install {stamps_variety.OOD_PACKAGES}` or `bash tools/setup.sh`, or pass 0 "
                "ood scenes.")
        if not unseen_classes(info):
            raise StampsError("val_ood / test_ood use recordings training never hears, and none of the classes "
                              f"{', '.join(info['classes'])} has one; choose classes with several recordings.")
        options["ood_backgrounds"] = stamps_variety.split_ood_backgrounds(found, seed)
    key, fingerprint = _params_fingerprint(options, info)
    params_path = os.path.join(out, ".parts", "params.json")
    if os.path.isfile(params_path):
        with open(params_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous.get("fingerprint") != fingerprint:
            if not overwrite:
                raise OtherBuildError(
                    f"{out} holds a stamps build with other settings ({params_path}); choose a new "
                    "--out folder or pass --overwrite to rebuild it.")
            shutil.rmtree(os.path.join(out, ".parts"))
    counts = {"train": n_train, "val": n_val, "test": n_test, "train_mix": n_train_mix,
              "test_mix": n_test_mix, "test_ext": n_test_ext, "test_speech": n_speech,
              "val_unseen": n_val_unseen, "test_unseen": n_test_unseen, "train_mosaic": n_train_mosaic,
              "val_mosaic": n_val_mosaic, "test_mosaic": n_test_mosaic, "test_duet": n_test_duet,
              "train_speech": n_train_speech, "val_speech": n_val_speech, "test_speech_unseen": n_test_speech_unseen,
              "val_interf": n_val_interf, "test_interf": n_test_interf, "val_ood": n_val_ood, "test_ood": n_test_ood}
    if (n_train_mosaic or n_val_mosaic or n_test_mosaic or n_test_duet or n_val_interf or n_test_interf) \
            and len(info["classes"]) < 4:
        raise StampsError(f"mosaic, duet and interference scenes show up to four objects of distinct sounding "
                          f"classes, and only {len(info['classes'])} classes sound ({', '.join(info['classes'])}); "
                          "choose at least 4 with --classes, or pass 0 mosaic / duet / interference scenes.")
    if (n_val_unseen or n_test_unseen) and not unseen_classes(info):
        raise StampsError(f"none of the classes {', '.join(info['classes'])} has a second recording, so "
                          "val_unseen / test_unseen cannot be built; choose classes with several recordings "
                          f"(e.g. {', '.join(unseen_classes(restrict_classes(load_catalog(stamps_dir, media_dir), None))[:8])}) "
                          "or pass --n-val-unseen 0 --n-test-unseen 0.")
    splits = [s for s in SPLIT_ORDER if counts[s] > 0]
    for split in splits:
        os.makedirs(os.path.join(out, ".parts", split), exist_ok=True)
    _write_json(params_path, {"fingerprint": fingerprint, "settings": key})
    _remove_stale_temp_files(out, splits)

    records, todo = finished_scenes(out, {split: counts[split] for split in splits})
    skipped = sum(counts[s] for s in splits) - len(todo)

    bar = tqdm(total=len(todo), desc="stamps scenes", unit="scene", disable=not progress)
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(info, options)) as pool:
            for task, record in zip(todo, pool.imap(render_scene, todo, chunksize=4)):
                records[task[0]][task[1]] = record
                bar.update()
    else:
        _init_worker(info, options)
        for task in todo:
            records[task[0]][task[1]] = render_scene(task)
            bar.update()
    bar.close()

    split_summary = {}
    for split in splits:
        _write_json(os.path.join(out, f"{split}.json"), records[split])
        class_counts = {}
        for record in records[split]:
            if record["kind"] in ("mixture",) + MULTI_OBJECT_KINDS:
                names = [s["class"] for s in record["sources"]]
            elif record["kind"] == "silent":
                names = []
            else:
                names = [record["class"]]
            for name in names:
                class_counts[name] = class_counts.get(name, 0) + 1
        split_summary[split] = {"scenes": len(records[split]),
                                "class_counts": dict(sorted(class_counts.items()))}
    summary = {
        "classes": info["classes"],
        "distractor_classes": info["distractor_classes"],
        "splits": split_summary,
        "backgrounds": options["backgrounds"],
        "stamps": len(info["stamps"]),
        "dropped_stamps": info["dropped"],
        "recordings": len(info["recordings"]),
        "unseen_recordings": sorted(r["id"] for r in info["recordings"] if r["unseen"]),
        "size": int(size), "seed": int(seed), "ambience": bool(ambience), "variety": variety_name,
    }
    _write_json(os.path.join(out, "classes.json"), info["classes"])
    _write_json(os.path.join(out, "summary.json"), summary)
    seconds = time.time() - started
    summary = dict(summary, built=len(todo), skipped=skipped, seconds=round(seconds, 2),
                   scenes_per_second=round(len(todo) / max(seconds, 1e-9), 2))
    return summary


def format_summary(summary):
    """Human-readable table of the per-split class counts."""
    lines = [f"{len(summary['classes'])} classes from {summary['stamps']} photo stamps, "
             f"{summary['recordings']} recordings; backgrounds train/val/test = "
             + "/".join(str(len(summary["backgrounds"][s])) for s in ("train", "val", "test"))]
    splits = list(summary["splits"])
    widths = {split: max(12, len(split) + 2) for split in splits}
    lines.append(f"{'class':<14}" + "".join(f"{s:>{widths[s]}}" for s in splits))
    for name in summary["classes"]:
        lines.append(f"{name:<14}" + "".join(
            f"{summary['splits'][s]['class_counts'].get(name, 0):>{widths[s]}}" for s in splits))
    lines.append(f"{'scenes':<14}" + "".join(f"{summary['splits'][s]['scenes']:>{widths[s]}}" for s in splits))
    if "built" in summary:
        lines.append(f"built {summary['built']} scenes, skipped {summary['skipped']} already done, "
                     f"{summary['seconds']} s ({summary['scenes_per_second']} scenes/s)")
    return "\n".join(lines)
