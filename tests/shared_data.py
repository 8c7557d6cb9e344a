"""The real annotation files and clips of `../shared/data` (beside the checkout), read in place.

Their licences and the project's rule keep them out of the repository, so a checkout without that folder cannot
run the checks on real files: `shared_path` skips them there and says why. Every other check runs on data the
tests make.
"""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_path(*parts):
    """`../shared/data/<parts>`; skips the calling test when it is absent (the files are never copied in)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the real annotation files and clips live beside the checkout "
                    "(../shared/data) and are never copied into the repository")
    return path
