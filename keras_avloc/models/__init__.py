"""Audio-visual localisation models, the shared `AVLocModel` base and the method registry.

Methods: LVS, EZ-VSL, AVGN, CSOL and IEr (two stages each), DenseAV, AVC and AVSA. Each method's module declares
what it registers (`METHODS`) and what this package exports from it (`__all__`).

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


from keras_avloc.models.registry import module_declarations

# Every name a module lists in its `__all__` (read from its source) is exported here and imported on first use.
_LAZY = {name: module for module, values in module_declarations().items() for name in values.get("__all__", ())}


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


__all__ = [
    "ModelFileError",
    "build_model",
    "check_model_file",
    "get_method_class",
    "load_model",
    "method_names",
    "normalize_name",
    "register_method",
    *_LAZY,
]
