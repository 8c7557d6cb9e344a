"""Annotation lists of the field's newer evaluation protocols.

Extended Flickr-SoundNet / Extended VGG-SS (Mo & Morgado, "A Closer Look at Weakly-Supervised Audio-Visual Source
Localization", NeurIPS 2022; stoneMo/SLAVC `datasets.py`, `get_test_dataset`): the positives of the Flickr / VGG-SS
test lists plus the non-sounding pairs of `metadata/{flickr,vggss}_test_plus_silent.csv`. Each row pairs a frame
(`video`) with the audio of another clip (`audio`), or, in 379 rows of the VGG-SS list, with its own audio of a
clip whose source is not visible (`video == audio`, ids absent from `vggss_test.csv`).

Official oddities not reproduced: the official loader neither checks that a pair's files exist nor reports it (its
dataset replaces any sample that fails to load with a random other sample); here a malformed row is an error that
names the file and the line.

Example:
>>> pairs = read_nonsounding_pairs("metadata/vggss_test_plus_silent.csv")  # doctest: +SKIP
>>> pairs[0]  # doctest: +SKIP
{'video': 't-6BSzXBNbM_000051', 'audio': 'pMfpDNSFc-w_000009', 'label': 'non-sounding'}
"""

import csv

from keras_avloc.data.annotations import AnnotationError

NONSOUNDING_HEADER = ("video", "audio", "label")


def read_nonsounding_pairs(path):
    """Reads a `*_test_plus_silent.csv` list: the rows labelled `non-sounding`, in file order.

    The header row (`video,audio,label`) is optional; rows with another label are left out, as the official
    loader leaves them out; CRLF line ends and blank lines are ignored.

    Args:
        path: the csv file.

    Returns:
        list of `{"video": frame id, "audio": audio id, "label": "non-sounding"}`.

    Raises:
        AnnotationError: the file is missing, or a row does not have three non-empty fields.
    """
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    pairs = []
    for line_number, row in enumerate(rows, 1):
        cells = tuple(cell.strip() for cell in row)
        if line_number == 1 and cells == NONSOUNDING_HEADER:
            continue
        if len(cells) != 3 or not all(cells):
            raise AnnotationError(f"{path}: line {line_number} has {len(cells)} fields ({','.join(cells)!r}), "
                                  "expected video,audio,label")
        if cells[2] == "non-sounding":
            pairs.append(dict(zip(NONSOUNDING_HEADER, cells)))
    return pairs
