"""The method registry: one place that says which methods exist, read by `build_model`, training, the demo
and the `avloc` command line.

Importing this module does not import TensorFlow: a built-in method is declared by its own module
(`METHODS = {"lvs": "LVS"}` in `keras_avloc/models/lvs.py`), read from the source (`module_declarations`) and imported
on first use, so `avloc --help` stays instant while still listing every method. Adding a method means adding its
module; no list elsewhere names it.

A method registers once and gets `avloc train / evaluate / localize / demo` from the shared plumbing:

>>> from keras_avloc.models import register_method
>>> register_method("mymethod", MyModel)     # a keras_avloc.models.AVLocModel subclass  # doctest: +SKIP

Packages can also register methods without being imported by the user, through the entry-point group
`keras_avloc.methods` (`mymethod = my_package.models:MyModel` in their packaging metadata).
"""

import ast
import functools
import importlib
import os

from keras_avloc.io.errors import AvlocError

ENTRY_POINT_GROUP = "keras_avloc.methods"


class UnknownMethodError(AvlocError, ValueError):
    """A method name nobody registered; the message lists the known ones."""



@functools.lru_cache(maxsize=None)
def module_declarations():
    """What each module of `keras_avloc.models` declares, read from its source without importing it.

    A method module declares `METHODS = {"name": "ClassName", ...}` (the methods it registers) and `__all__` (the
    names `keras_avloc.models` exports from it); both must be literals.

    Returns:
        {module name: {"METHODS": {...}, "__all__": [...]}} for the modules that declare either.
    """
    folder = os.path.dirname(os.path.abspath(__file__))
    found = {}
    for file_name in sorted(os.listdir(folder)):
        if not file_name.endswith(".py") or file_name.startswith("_"):
            continue
        with open(os.path.join(folder, file_name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=file_name)
        values = {}
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and node.targets[0].id in ("METHODS", "__all__")):
                values[node.targets[0].id] = ast.literal_eval(node.value)
        if values:
            found[file_name[:-3]] = values
    return found


def builtin_methods():
    """{method name: "keras_avloc.models.<module>:<Class>"} of every method module's `METHODS`."""
    return {normalize_name(name): f"keras_avloc.models.{module}:{class_name}"
            for module, values in module_declarations().items() for name, class_name in values.get("METHODS", {}).items()}

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
    return sorted({**_entry_points(), **builtin_methods(), **_REGISTERED})


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
    target = _REGISTERED.get(key) or builtin_methods().get(key) or _entry_points().get(key)
    if target is None:
        raise UnknownMethodError(f"unknown method {name!r}; choose one of {', '.join(method_names())}.")
    if isinstance(target, str):
        module_name, _, attribute = target.partition(":")
        target = getattr(importlib.import_module(module_name), attribute)
    return target
