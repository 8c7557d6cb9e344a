"""The method registry: one place that says which methods exist, read by `build_model`, training, the demo
and the `avloc` command line.

Importing this module does not import TensorFlow: built-in methods are named by "module:Class" and
imported on first use, so `avloc --help` stays instant while still listing every method.

A method registers once and gets `avloc train / evaluate / localize / demo` from the shared plumbing:

>>> from keras_avloc.models import register_method
>>> register_method("mymethod", MyModel)     # a keras_avloc.models.AVLocModel subclass  # doctest: +SKIP

Packages can also register methods without being imported by the user, through the entry-point group
`keras_avloc.methods` (`mymethod = my_package.models:MyModel` in their packaging metadata).
"""

import importlib

from keras_avloc.io.errors import AvlocError

ENTRY_POINT_GROUP = "keras_avloc.methods"


class UnknownMethodError(AvlocError, ValueError):
    """A method name nobody registered; the message lists the known ones."""

_BUILTIN = {
    "lvs": "keras_avloc.models.lvs:LVS",
    "ezvsl": "keras_avloc.models.ezvsl:EZVSL",
    "avgn": "keras_avloc.models.avgn:AVGN",
    "csol": "keras_avloc.models.csol:CSOLStageOne",
    "csolstage2": "keras_avloc.models.csol:CSOLStageTwo",
    "ier": "keras_avloc.models.ier:IErStageOne",
    "ierstage2": "keras_avloc.models.ier:IErStageTwo",
    "denseav": "keras_avloc.models.denseav:DenseAV",
    "avc": "keras_avloc.models.avsa:AVC",
    "avsa": "keras_avloc.models.avsa:AVSA",
}
_REGISTERED = {}


def normalize_name(name):
    """Method names are case-insensitive and ignore '-' and '_' ("EZ-VSL" == "ezvsl")."""
    return str(name).lower().replace("-", "").replace("_", "")


def _entry_points():
    try:
        from importlib.metadata import entry_points

        return {normalize_name(point.name): point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # noqa: BLE001 - broken third-party metadata must not break the command line
        return {}


def method_names():
    """Sorted names of every available method (built-in, registered in this process, entry points)."""
    return sorted({**_entry_points(), **_BUILTIN, **_REGISTERED})


def register_method(name, model_class):
    """Makes `build_model(name)`, `avloc train --method name` and the demo know `model_class`.

    Args:
        name: method name (normalised with `normalize_name`).
        model_class: a `keras_avloc.models.AVLocModel` subclass, or a "module:Class" string.
    """
    key = normalize_name(name)
    if not key:
        raise UnknownMethodError("register_method: the method name is empty.")
    _REGISTERED[key] = model_class


def get_method_class(name):
    """The model class of a method name.

    Raises:
        UnknownMethodError: unknown method (the message lists the known ones).
    """
    key = normalize_name(name)
    target = _REGISTERED.get(key) or _BUILTIN.get(key) or _entry_points().get(key)
    if target is None:
        raise UnknownMethodError(f"unknown method {name!r}; choose one of {', '.join(method_names())}.")
    if isinstance(target, str):
        module_name, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
    return target
