"""Audio-visual localisation models: LVS, EZ-VSL, AVGN, and the shared `AVLocModel` base.

Example:
>>> from keras_avloc.models import build_model, load_model
>>> model = build_model("lvs")               # doctest: +SKIP
>>> model = build_model("avgn", class_names=["dog", "cat"])  # doctest: +SKIP
>>> model = load_model("runs/lvs/model.keras")  # doctest: +SKIP
"""

from keras_avloc.models.avgn import (
    AVGN,
    avgn_class_loss,
    avgn_localization_loss,
    avgn_loss_terms,
    avgn_token_loss,
)
from keras_avloc.models.base import AVLocModel, cosine_similarity_map, minmax_normalize, upsample_maps
from keras_avloc.models.ezvsl import EZVSL, ezvsl_loss, ezvsl_loss_terms
from keras_avloc.models.lvs import LVS, lvs_loss, lvs_loss_terms

MODELS = {"lvs": LVS, "ezvsl": EZVSL, "avgn": AVGN}


def register_method(name, model_class):
    """Makes `build_model(name)` and `avloc train --method name` build `model_class`."""
    MODELS[name.lower()] = model_class


def build_model(method, **kwargs):
    """Builds a fresh model by method name.

    Args:
        method: "lvs", "ezvsl" or "avgn" (or a name added with `register_method`).
        **kwargs: constructor arguments of the model class (e.g. `tau=0.03`; AVGN needs `num_classes`
            or `class_names`).

    Returns:
        An uncompiled `AVLocModel`.
    """
    key = str(method).lower().replace("-", "")
    if key not in MODELS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(MODELS)}.")
    return MODELS[key](**kwargs)


def load_model(path, compile=True):
    """Loads a `.keras` file written by `model.save` / `avloc train` (OUT/model.keras).

    Args:
        path: the `.keras` file.
        compile: restore the optimizer and compile state.

    Returns:
        The model (an `AVLocModel` subclass).
    """
    import os

    import keras

    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path} does not exist; train one with `avloc train --out DIR`.")
    # Importing this package registered the classes with keras.saving.
    return keras.saving.load_model(path, compile=compile)


__all__ = [
    "AVLocModel",
    "LVS",
    "EZVSL",
    "AVGN",
    "MODELS",
    "build_model",
    "load_model",
    "register_method",
    "lvs_loss",
    "lvs_loss_terms",
    "ezvsl_loss",
    "ezvsl_loss_terms",
    "avgn_loss_terms",
    "avgn_localization_loss",
    "avgn_class_loss",
    "avgn_token_loss",
    "cosine_similarity_map",
    "upsample_maps",
    "minmax_normalize",
]
