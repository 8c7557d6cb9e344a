"""Atomic file writes (the one implementation every writer of keras-avloc uses), and the readers' first check.

A writer gets a hidden temporary path next to the target (same filesystem), writes there, and the file is
renamed into place with `os.replace` only when writing succeeded. A crash, Ctrl-C or `kill -9` therefore
never leaves a half-written file under a finished name; the temporaries of dead writers are recognised by
their marker and pid and removed by `remove_stale_temp_files`.

Example:
>>> from keras_avloc.io.files import atomic_output, write_json
>>> write_json("/tmp/example.json", {"a": 1})  # doctest: +SKIP
>>> with atomic_output("/tmp/model.keras", suffix=".keras") as tmp:  # doctest: +SKIP
...     model.save(tmp)
"""

import contextlib
import json
import os
import uuid

from keras_avloc.io.errors import AvlocError, MediaError

TEMP_MARKER = ".avloc-tmp"


class OutputPathError(AvlocError, OSError):
    """An output path of the wrong kind (a file where a folder is needed, or the reverse)."""


def temp_path_for(path, suffix=""):
    """A unique hidden temporary path in the directory of `path`.

    Args:
        path: the final path.
        suffix: appended to the temporary name (e.g. ".keras": some writers insist on an extension).

    Returns:
        `<dir>/.<name>.<pid>.<random>.avloc-tmp<suffix>`.
    """
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_MARKER}{suffix}")


@contextlib.contextmanager
def atomic_output(path, suffix=""):
    """Yields a temporary path; renames it to `path` when the block succeeds, deletes it otherwise.

    The parent folder is created. If the block wrote nothing, nothing is renamed.

    Args:
        path: final file path.
        suffix: extension the temporary name must end with (see `temp_path_for`).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    tmp = temp_path_for(path, suffix)
    try:
        yield tmp
        if os.path.exists(tmp):
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically. Returns `path`."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return path


def write_npz(path, **arrays):
    """Writes numpy arrays to an uncompressed `.npz` at `path` atomically. Returns `path`."""
    import numpy as np

    with atomic_output(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def write_text(path, text):
    """Writes a UTF-8 string to `path` atomically. Returns `path`."""
    return write_bytes(path, text.encode("utf-8"))


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path, payload, indent=1, sort_keys=False):
    """Writes `payload` as JSON (numpy scalars and arrays allowed) to `path` atomically. Returns `path`."""
    text = json.dumps(payload, indent=indent, sort_keys=sort_keys, ensure_ascii=False, default=_json_default)
    return write_text(path, text + "\n")


def pid_alive(pid):
    """True when a process with this pid exists (or exists but belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_pid(name):
    stem = name.split(TEMP_MARKER, 1)[0]
    parts = stem.split(".")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def remove_stale_temp_files(directory):
    """Deletes the temporaries of `atomic_output` in `directory` whose writer process is gone.

    Returns:
        How many files were removed.
    """
    removed = 0
    if not os.path.isdir(directory):
        return 0
    for name in os.listdir(directory):
        if TEMP_MARKER not in name:
            continue
        pid = _writer_pid(name)
        if pid is not None and pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(directory, name))
            removed += 1
    return removed


def check_output_folder(path, flag="--out"):
    """Raises `OutputPathError` naming `flag` when `path` exists and is not a folder.

    Args:
        path: a folder a command will write into.
        flag: how the user gave it (named in the message).
    """
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputPathError(f"{flag} {path} is an existing file, not a folder; pass a folder path "
                                 "(it is created if missing).")
    return path


def check_output_file(path, flag="--out"):
    """Raises `OutputPathError` naming `flag` when a file output `path` is an existing folder."""
    if os.path.isdir(path):
        raise OutputPathError(f"{flag} {path} is a folder; pass a file name (e.g. {os.path.join(path, 'out.png')}).")
    return path


def check_readable(path):
    """Raises `MediaError` naming `path` when it is missing, a directory or empty."""
    if not os.path.exists(path):
        raise MediaError(f"{path}: file does not exist")
    if os.path.isdir(path):
        raise MediaError(f"{path}: is a directory, expected a media file")
    if os.path.getsize(path) == 0:
        raise MediaError(f"{path}: file is empty (0 bytes); re-extract or re-download it")
