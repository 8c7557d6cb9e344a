"""Audio-visual localisation models, the shared `AVLocModel` base and the method registry.

Methods: LVS, EZ-VSL, AVGN, CSOL and IEr (two stages each), DenseAV, AVC and AVSA.

The model classes and losses are imported on first use (PEP 562), so the registry (`method_names`,
`register_method`) is available without TensorFlow.

Example:
>>> from keras_avloc.models import build_model, load_model
>>> model = build_model("lvs")               # doctest: +SKIP
>>> model = build_model("avgn", class_names=["dog", "cat"])  # doctest: +SKIP
>>> model = load_model("runs/lvs/model.keras")  # doctest: +SKIP
"""

import importlib
import json
import os
import zipfile

from keras_avloc.io.errors import AvlocError
from keras_avloc.models.registry import get_method_class, method_names, normalize_name, register_method


_LAZY = {
    "AVGN": "avgn", "avgn_class_loss": "avgn", "avgn_localization_loss": "avgn", "avgn_loss_terms": "avgn",
    "avgn_token_loss": "avgn",
    "CSOLStageOne": "csol", "CSOLStageTwo": "csol", "csol_stage_one_loss_terms": "csol",
    "csol_stage_two_loss_terms": "csol", "csol_class_loss_terms": "csol",
    "DenseAV": "denseav", "denseav_loss_terms": "denseav",
    "IErStageOne": "ier", "IErStageTwo": "ier", "aii_loss_terms": "ier", "ier_stage_two_loss_terms": "ier",
    "AVC": "avsa", "AVSA": "avsa", "avc_loss_terms": "avsa", "avsa_contrast_terms": "avsa",
    "AVLocModel": "base", "cosine_similarity_map": "base", "minmax_normalize": "base", "objectness_map": "base",
    "upsample_maps": "base",
    "EZVSL": "ezvsl", "ezvsl_loss": "ezvsl", "ezvsl_loss_terms": "ezvsl",
    "LVS": "lvs", "lvs_loss": "lvs", "lvs_loss_terms": "lvs",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"keras_avloc.models.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_avloc.models' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class ModelFileError(AvlocError, ValueError):
    """A model file that cannot be loaded; the message names the file and what is wrong with it."""


def build_model(method, **kwargs):
    """Builds a fresh model by method name.

    Args:
        method: a name from `method_names()` ("lvs", "ezvsl", "avgn", or one added with `register_method`).
        **kwargs: constructor arguments of the model class (e.g. `tau=0.03`; AVGN needs `num_classes`
            or `class_names`).

    Returns:
        An uncompiled `AVLocModel`.
    """
    return get_method_class(method)(**kwargs)


def check_model_file(path):
    """Checks that `path` is a readable `.keras` archive before Keras opens it.

    Raises:
        ModelFileError: missing file, a folder, not a zip archive (truncated or another format), no
            `config.json` or unreadable JSON inside; each message names the file and the fix.
    """
    if not os.path.exists(path):
        raise ModelFileError(f"model file {path} does not exist; train one with `avloc train --out DIR` "
                             "(it writes DIR/model.keras) or convert one with `avloc port-weights --method`.")
    if os.path.isdir(path):
        raise ModelFileError(f"{path} is a folder; pass the model file inside it "
                             f"(e.g. {os.path.join(path, 'model.keras')}).")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a .keras model file (not a zip archive: truncated, corrupt or another "
                             "format); re-save it with model.save(...) or re-run the training.")
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelFileError(f"{path} is a zip archive without config.json, so not a .keras model file; "
                                     "re-save it with model.save(...).")
            json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, ModelFileError):
            raise
        raise ModelFileError(f"{path}: the model archive is damaged ({err}); re-save or re-train it.") from None


def load_model(path, compile=True):
    """Loads a `.keras` file written by `model.save` / `avloc train` (OUT/model.keras).

    Only registered keras-avloc classes are rebuilt; Keras' safe mode stays on, so a file can never run
    code (Lambda layers and pickles are refused).

    Args:
        path: the `.keras` file.
        compile: restore the optimizer and compile state.

    Returns:
        The model (an `AVLocModel` subclass).

    Raises:
        ModelFileError: the file is missing, damaged, not a model, or its weights do not fit.
    """
    import keras

    from keras_avloc.models.base import AVLocModel

    check_model_file(path)
    for name in method_names():  # importing a method's module registers its classes with keras.saving
        get_method_class(name)
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - Keras raises many types; the user needs the file and the reason
        raise ModelFileError(f"{path}: cannot be loaded as a keras-avloc model ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else err!r}).") from err
    if not isinstance(model, AVLocModel):
        raise ModelFileError(f"{path} holds a {type(model).__name__}, not a keras-avloc model "
                             f"(one of {', '.join(method_names())}).")
    return model


# Every model class of the registry (`registry._BUILTIN`) and every loss helper in `_LAZY` is listed here;
# tests/test_packaging.py checks that each registered class is reachable as `keras_avloc.models.<Class>`.
__all__ = [
    "AVLocModel",
    "LVS",
    "EZVSL",
    "AVGN",
    "CSOLStageOne",
    "CSOLStageTwo",
    "IErStageOne",
    "IErStageTwo",
    "DenseAV",
    "AVC",
    "AVSA",
    "ModelFileError",
    "build_model",
    "check_model_file",
    "get_method_class",
    "load_model",
    "method_names",
    "normalize_name",
    "register_method",
    "lvs_loss",
    "lvs_loss_terms",
    "ezvsl_loss",
    "ezvsl_loss_terms",
    "avgn_loss_terms",
    "avgn_localization_loss",
    "avgn_class_loss",
    "avgn_token_loss",
    "csol_stage_one_loss_terms",
    "csol_stage_two_loss_terms",
    "csol_class_loss_terms",
    "aii_loss_terms",
    "ier_stage_two_loss_terms",
    "denseav_loss_terms",
    "avc_loss_terms",
    "avsa_contrast_terms",
    "cosine_similarity_map",
    "objectness_map",
    "upsample_maps",
    "minmax_normalize",
]
