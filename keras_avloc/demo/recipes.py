"""The demo's recipes: its classes and augmentation, each method's settings (read from its `demo_recipe`), the presets."""

DEMO_CLASSES = ("chicken", "cow", "dog", "drum kit", "duck", "horse", "owl", "pig")
"""Sounding classes of the demo: eight that differ in look and sound and that each have at least two
distinct real recordings, so that some can stay unseen (val_unseen / test_unseen)."""

DEMO_AUGMENTATION = dict(time_shift=0.5, gain_db=6.0, noise_probability=0.5, noise_snr_db=(10.0, 30.0), speed=0.1,
                         freq_masks=2, freq_mask_width=24, time_masks=2, time_mask_width=12)
"""The published image crop and flip, plus audio augmentation (time shift, gain, noise, speed, masks): with
one or two training recordings per class, the audio network otherwise memorises the recordings."""

AMBIENCE = dict(ambience_probability=0.5, ambience_snr_db=(5.0, 15.0))
"""Another scene's sound 5-15 dB below the clip's, half the time (LVS, CSOL and IEr in the demo)."""

LOGMEL_MASKS = dict(freq_mask_width=6, time_mask_width=36)
"""`DEMO_AUGMENTATION`'s masks at the same shares of the 64-band, 200-frame/s log-mel as of LVS's 257-bin, 66-frame/s
spectrogram (the widths count bins and frames): DenseAV in the demo. CSOL and IEr keep the unscaled ones, chosen
on val (docs/demo.md, "Every method")."""

AUGMENTATION_PRESETS = {"ambience": AMBIENCE, "logmel_masks": LOGMEL_MASKS}
"""The augmentation presets a method's `demo_recipe` may name in its "training" ("augment": "ambience")."""


def _recipes():
    """{registered name: `demo_recipe`} of every frame method that has one (the 360° methods' recipes are read by
    `keras_avloc.demo.sphere`)."""
    from keras_avloc.models.registry import get_method_class, method_names

    return {name: get_method_class(name).demo_recipe for name in method_names()
            if get_method_class(name).demo_recipe and get_method_class(name).data_kind == "frames"}


def _training(recipe, key="training"):
    settings = dict(recipe.get(key, recipe.get("training", {})))
    if isinstance(settings.get("augment"), str) and settings["augment"] in AUGMENTATION_PRESETS:
        settings["augment"] = AUGMENTATION_PRESETS[settings["augment"]]
    return settings


def _recipe_table(key):
    """{method: its recipe's `key`} over the methods whose recipe sets it ("training" and "full_training" resolve
    named augmentations; "full_training" falls back to "training", "full_settings" to "settings")."""
    table = {}
    for name, recipe in _recipes().items():
        if key in ("training", "full_training"):
            if recipe.get("training") or recipe.get(key):
                table[name] = _training(recipe, key)
        elif key == "full_settings" and ("settings" in recipe or key in recipe):
            table[name] = dict(recipe.get(key, recipe.get("settings")))
        elif key in recipe:
            table[name] = dict(recipe[key])
    return table


METHOD_TRAINING = _recipe_table("training")
"""Per-method training settings of the demo, chosen on val: each method's `demo_recipe["training"]` (the reasons
sit beside each recipe in its module and in docs/demo.md)."""

METHOD_SETTINGS = _recipe_table("settings")
"""Per-method constructor arguments of the demo (named options; the defaults stay the papers')."""

FULL_METHOD_TRAINING = _recipe_table("full_training")
"""`METHOD_TRAINING` of the full preset (65 classes, 6,000 scenes): a recipe's "full_training" where it has one
(EZ-VSL: its official 1e-4)."""

FULL_METHOD_SETTINGS = _recipe_table("full_settings")
"""`METHOD_SETTINGS` of the full preset: a recipe's "full_settings" where it has one (EZ-VSL keeps the settings
measured there, without the 8-class demo's temperature and image dropout)."""


def method_stages(method):
    """The registered models of a demo method, in order: it, then each `next_stage` (CSOL / IEr: stage one, then
    stage two). A stage that names another method in its "init_from" (IEr's stage one continues CSOL's) starts from
    that method's stage one of the same init."""
    from keras_avloc.models.registry import get_method_class

    stages = [method]
    while get_method_class(stages[-1]).next_stage:
        stages.append(get_method_class(stages[-1]).next_stage)
    return tuple(stages)


def trained_stages(method):
    """The stages the demo trains: those up to the one it scores (a recipe's "scored_stage"; default: the last); a
    later stage would change nothing in the report. Multi-stage methods train stage one on `train` into
    `<run>-stage1/` and stage two on `train_mosaic` from it into `<run>/`."""
    stages = method_stages(method)
    return stages[:_recipes().get(method, {}).get("scored_stage", len(stages))]


def all_methods():
    """`avloc demo --methods all`: every method that localises in a frame and has a place in the demo (its recipe's
    "order"; AVC / AVSA score 360° clips), in that order."""
    recipes = _recipes()
    return tuple(sorted((name for name, recipe in recipes.items() if "order" in recipe),
                        key=lambda name: (recipes[name]["order"], name)))


def uses_speech_standin(method):
    """Whether a demo method's audio network starts from the speech stand-in (its recipe's "speech_standin")."""
    return bool(_recipes().get(method, {}).get("speech_standin"))


def prompted_methods(methods):
    """The demo methods scored on DenseAV's sound and speech protocols: those whose recipe says "prompted", and, when
    there is one, the methods among `methods` whose recipe says "prompted_reference" (LVS: it never hears speech)."""
    recipes = _recipes()
    if not any(recipes.get(method, {}).get("prompted") for method in methods):
        return ()
    return tuple(method for method in methods
                 if recipes.get(method, {}).get("prompted") or recipes.get(method, {}).get("prompted_reference"))


def default_methods():
    """The default demo's methods: those whose recipe says "default", in demo order."""
    recipes = _recipes()
    return tuple(name for name in all_methods() if recipes[name].get("default"))


_TRAINING = dict(
    size=224, image_size=160, clip_seconds=1.0, batch_size=32, width=16, learning_rate=3e-4, augment=DEMO_AUGMENTATION,
    method_training=METHOD_TRAINING, cache=True, method_settings=METHOD_SETTINGS,
    standin=dict(per_class=16, epochs=12, image_size=112, batch_size=64, learning_rate=2e-3), run_eagerly=False,
    speech_standin=dict(words_per_language=100, per_word=8, epochs=15, batch_size=64, learning_rate=2e-3),
    variety="narrow", audio_level_db=-20.0,
)
PRESETS = {
    # Chosen on val and val_ood. On 2 CPU cores with native bf16 (no AMX): 4 to 7 minutes with the data and the
    # stand-in built, 6.5 to 11.5 from a fresh clone (398-690 s); `--ablations` adds the from-scratch runs; `--methods all`
    # took about 17 minutes with the earlier settings (docs/demo.md).
    "default": dict(_TRAINING, classes=DEMO_CLASSES, n_train=1600, n_val=160, n_test=320, n_val_unseen=160,
                    n_test_unseen=160, n_val_ood=160, n_test_ood=320, epochs=8, scratch=False),
    # Every sounding class of the benchmark (20 to 32 minutes with the data built, 2026-12-08 / 2026-12-06). EZ-VSL
    # trains at its official 1e-4 here (`FULL_METHOD_TRAINING`) with its measured settings (`FULL_METHOD_SETTINGS`).
    "full": dict(_TRAINING, classes=None, n_train=6000, n_val=400, n_test=800, n_val_unseen=400, n_test_unseen=400,
                 n_val_ood=400, n_test_ood=800, epochs=12, scratch=False, method_training=FULL_METHOD_TRAINING,
                 method_settings=FULL_METHOD_SETTINGS),
    # End-to-end smoke run (tests): a few scenes, one epoch, tiny networks.
    "tiny": dict(
        classes=DEMO_CLASSES, n_train=8, n_val=8, n_test=8, n_val_unseen=8, n_test_unseen=8, n_test_ood=8, size=64,
        variety="wide", audio_level_db=-20.0,
        image_size=64, clip_seconds=0.5, epochs=1, batch_size=4, width=4, learning_rate=1e-4,
        augment=DEMO_AUGMENTATION, method_training=METHOD_TRAINING, cache=True,
        method_settings=_recipe_table("tiny_settings"),
        method_epochs=False,
        scratch=False, standin=dict(per_class=2, epochs=1, image_size=48, render_size=56, batch_size=16,
                                   learning_rate=1e-3),
        speech_standin=dict(words_per_language=1, per_word=2, epochs=1, batch_size=6, learning_rate=1e-3),
        run_eagerly=True,
    ),
}
