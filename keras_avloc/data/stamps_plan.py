"""Planning a stamps scene: the split table, and every random choice of *what* a scene shows and sounds.

Every draw comes from one generator seeded by (seed, split, index) (`_scene_rng`); `keras_avloc.data.stamps` renders
the plan. `SPLITS` is the one table of splits: a new split is one line there (and its count in `build_stamps`).
"""

import zlib
from collections import namedtuple

import numpy as np

from keras_avloc.data.stamps_compose import _other_classes

SPLIT_FRACTIONS = {"test": 0.3, "val": 0.1}  # of the backgrounds; train gets the rest

Split = namedtuple("Split", ["backgrounds", "audio", "kind", "languages"], defaults=[None])
"""How a split's scenes are made: which background list ("train" / "val" / "test"), which part of the recordings
("train": the first part of the seen ones; "heldout": the rest; "unseen": those training never hears), the scene kind
(see `scene_kind`) and, for speech, which prompts ("english", "seen" or "unseen" languages; `_spoken_prompt`)."""
SPLITS = {  # in build order; a new split is one line here (and its count in `build_stamps`)
    "train": Split("train", "train", "single"),
    "val": Split("val", "heldout", "single"),
    "test": Split("test", "heldout", "single"),
    "train_mix": Split("train", "train", "mixture"),
    "test_mix": Split("test", "heldout", "mixture"),
    "test_ext": Split("test", "heldout", "extended"),
    "test_speech": Split("test", "heldout", "speech", "english"),
    "val_unseen": Split("val", "unseen", "single"),
    "test_unseen": Split("test", "unseen", "single"),
    "train_mosaic": Split("train", "train", "mosaic"),
    "val_mosaic": Split("val", "heldout", "mosaic"),
    "test_mosaic": Split("test", "heldout", "mosaic"),
    "test_duet": Split("test", "heldout", "duet"),
    "train_speech": Split("train", "train", "speech", "seen"),
    "val_speech": Split("val", "heldout", "speech", "seen"),
    "test_speech_unseen": Split("test", "heldout", "speech", "unseen"),
    "val_interf": Split("val", "heldout", "interference"),
    "test_interf": Split("test", "heldout", "interference"),
    "val_ood": Split("val", "unseen", "single"),
    "test_ood": Split("test", "unseen", "single"),
}
SPLIT_ORDER = tuple(SPLITS)
SPLIT_BACKGROUNDS = {name: split.backgrounds for name, split in SPLITS.items()}
SPLIT_AUDIO_PART = {name: split.audio for name, split in SPLITS.items()}
SPLIT_LANGUAGES = {name: split.languages for name, split in SPLITS.items() if split.languages}
EXTENDED_KINDS = ("single", "single", "silent", "offscreen")
"""Scene `index` of the extended-protocol split (test_ext) is of kind `EXTENDED_KINDS[index % 4]`."""
MULTI_OBJECT_KINDS = ("mosaic", "duet", "interference")
INTERFERENCE_SCENARIOS = ("volume_0db", "volume_6db", "volume_12db", "volume_20db", "offscreen", "silent", "combined")
"""Scene `index` of an interference split shows scenario `index % 7`. volume_Xdb: two visible sounding objects, the
second X dB above or below the first (the sign alternates); offscreen: one visible sounding object and an audible
class not in the frame (0 dB); silent: one sounding object and 1-2 visible silent objects of sounding classes;
combined: two sounding objects at 0/6/12/20 dB, an off-screen source and one silent object."""


def _scene_rng(seed, split, index, stream=0):
    return np.random.default_rng([int(seed), zlib.crc32(split.encode()), int(index), stream])


def split_backgrounds(backgrounds, seed):
    """Disjoint background lists {"train", "val", "test"} (a seeded shuffle of the sorted names)."""
    order = list(np.random.default_rng([int(seed), 7]).permutation(len(backgrounds)))
    names = [backgrounds[i] for i in order]
    n_test = max(1, int(round(len(names) * SPLIT_FRACTIONS["test"])))
    n_val = max(1, int(round(len(names) * SPLIT_FRACTIONS["val"])))
    return {"test": sorted(names[:n_test]), "val": sorted(names[n_test: n_test + n_val]),
            "train": sorted(names[n_test + n_val:])}


def balanced_class(classes, seed, split, index):
    """Class of scene `index`: each block of len(classes) scenes holds every class once."""
    block, position = divmod(int(index), len(classes))
    order = _scene_rng(seed, split, block, stream=1).permutation(len(classes))
    return classes[int(order[position])]


def scene_kind(split, index):
    """The kind of scene `index` of `split` ("single", "mixture", "silent", "offscreen", "speech", "mosaic", ...)."""
    kind = SPLITS[split].kind
    return EXTENDED_KINDS[int(index) % len(EXTENDED_KINDS)] if kind == "extended" else kind


def interference_plan(index, rng):
    """(scenario, level_db of the second on-screen source or None, on-screen sounding count, off-screen count,
    silent count) of interference scene `index` (see INTERFERENCE_SCENARIOS)."""
    scenario = INTERFERENCE_SCENARIOS[int(index) % len(INTERFERENCE_SCENARIOS)]
    sign = 1.0 if (int(index) // len(INTERFERENCE_SCENARIOS)) % 2 == 0 else -1.0
    if scenario.startswith("volume_"):
        return scenario, sign * float(scenario[len("volume_"):-2]) + 0.0, 2, 0, 0  # + 0.0: no "-0.0"
    if scenario == "offscreen":
        return scenario, None, 1, 1, 0
    if scenario == "silent":
        return scenario, None, 1, 0, int(rng.integers(1, 3))
    return scenario, sign * float((0, 6, 12, 20)[int(rng.integers(0, 4))]) + 0.0, 2, 1, 1


# Who is in the picture, one function per scene kind: (sounding classes, visible classes, interference plan,
# off-screen classes). Silent distractors of "single", "mixture", "silent" and "speech" scenes may be any photo stamp;
# those of the multi-object kinds are of sounding classes (heard in other scenes, silent here).


def _pictured_pool(info):
    return info["classes"] + info["distractor_classes"]


def _cast_single(info, kind, main_class, index, settings, rng):
    sounding = [main_class]
    low, high = settings["distractors"]
    count = int(rng.integers(low, high + 1))
    if not settings.get("sounding_distractors"):
        return sounding, sounding + _other_classes(_pictured_pool(info), sounding, count, rng), None, []
    # Silent objects of classes that sound in other scenes: only the audio tells them from the source.
    heard = sum(rng.random() < settings["sounding_distractors"] for _ in range(count))
    chosen = _other_classes(info["classes"], sounding, min(heard, len(info["classes"]) - 1), rng)
    visible = sounding + chosen + _other_classes(_pictured_pool(info), sounding + chosen, count - len(chosen), rng)
    return sounding, visible, None, []


def _cast_mixture(info, kind, main_class, index, settings, rng):
    sounding = [main_class] + _other_classes(info["classes"], [main_class], 1, rng)
    return sounding, sounding + _other_classes(_pictured_pool(info), sounding, int(rng.integers(0, 2)), rng), None, []


def _cast_silent(info, kind, main_class, index, settings, rng):
    return [], _other_classes(_pictured_pool(info), [main_class], int(rng.integers(1, 4)), rng), None, []


def _cast_speech(info, kind, main_class, index, settings, rng):
    sounding = [main_class]
    return sounding, sounding + _other_classes(_pictured_pool(info), sounding, int(rng.integers(1, 4)), rng), None, []


def _cast_multi_object(info, kind, main_class, index, settings, rng):
    sounding = [main_class] + _other_classes(info["classes"], [main_class], 1, rng)
    n_silent = 2 if kind == "mosaic" else int(rng.integers(1, 3))
    return sounding, sounding + _other_classes(info["classes"], sounding, n_silent, rng), None, []


def _cast_interference(info, kind, main_class, index, settings, rng):
    plan = interference_plan(index, rng)
    _, _, n_sounding, n_offscreen, n_silent = plan
    sounding = [main_class] + _other_classes(info["classes"], [main_class], n_sounding - 1, rng)
    visible = sounding + _other_classes(info["classes"], sounding, n_silent, rng)
    return sounding, visible, plan, _other_classes(info["classes"], visible, n_offscreen, rng)


CASTS = {"single": _cast_single, "offscreen": _cast_single, "mixture": _cast_mixture, "silent": _cast_silent,
         "speech": _cast_speech, "mosaic": _cast_multi_object, "duet": _cast_multi_object,
         "interference": _cast_interference}
"""The cast of each scene kind (`scene_kind`); a new kind adds its function here."""
