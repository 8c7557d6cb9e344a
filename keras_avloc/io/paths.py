"""The one rule for clip ids and for paths named inside a dataset root.

A clip id (`file` in a split file, a downloaded or extracted clip's name) becomes file names such as
`ROOT/frames/<id>.jpg`, so it must be a plain name stem: letters, digits, '_', '-' and '.', not starting
with '.', without '..', at most 200 characters. Paths that a split file names (`mask`, `audio` of a
source) must be relative and stay inside the dataset root after resolving symbolic links. Everything that
reads or writes a dataset (the downloader, `avloc data extract`, `load_split` behind train, evaluate and
to-tfrecord) applies these two checks, so an annotation file can never make keras-avloc read or write
outside its dataset.
"""

import os
import re

from keras_avloc.io.errors import AvlocError

SAFE_FILE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}$")
FILE_ID_RULE = "letters, digits, '_', '-' and '.' only, not starting with '.', no '..', at most 200 characters"


class UnsafePathError(AvlocError, ValueError):
    """An id or a path that would leave the dataset root (or is not a plain name); the message says why."""


def check_file_id(file_id):
    """Returns `file_id` when it is a safe clip id (see the module docstring).

    Raises:
        UnsafePathError: naming the id and the rule.

    Example:
    >>> check_file_id("zpWuikVorYg_000032")
    'zpWuikVorYg_000032'
    """
    if not isinstance(file_id, str) or not SAFE_FILE_ID.fullmatch(file_id) or ".." in file_id:
        raise UnsafePathError(f"invalid clip id {file_id!r}: use {FILE_ID_RULE} (no path separators)")
    return file_id


def is_inside(root, path):
    """True when `path` (resolving symbolic links) lies inside the folder `root`."""
    root = os.path.realpath(os.fspath(root))
    return os.path.commonpath([root, os.path.realpath(os.fspath(path))]) == root


def resolve_inside(root, relative, what="path"):
    """Joins a relative path named by an annotation to `root`, refusing anything that leaves the root.

    Args:
        root: dataset root.
        relative: the path as written in the split file, e.g. "masks/test_00001.png".
        what: what the path is, for the message ("mask", "source audio", ...).

    Returns:
        The joined path (`root/relative`).

    Raises:
        UnsafePathError: `relative` is absolute, contains '..' components or resolves outside `root`.
    """
    if not isinstance(relative, str) or not relative.strip():
        raise UnsafePathError(f"{what} path {relative!r} is not a non-empty string")
    if os.path.isabs(relative) or relative.startswith("~"):
        raise UnsafePathError(f"{what} path {relative!r} is absolute; give it relative to the dataset root {root}")
    if ".." in relative.replace("\\", "/").split("/"):
        raise UnsafePathError(f"{what} path {relative!r} contains '..'; paths must stay inside the dataset root")
    joined = os.path.join(root, relative)
    if not is_inside(root, joined):
        raise UnsafePathError(f"{what} path {relative!r} resolves outside the dataset root {root} (a symbolic link?)")
    return joined
