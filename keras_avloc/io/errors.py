"""`AvlocError`: the base of every error keras-avloc raises for bad input.

Each subclass (MediaError, AnnotationError, TrainingError, EvaluationError, ModelFileError, ...) carries a
message that names the file or option and the fix; the `avloc` command prints it without a traceback.
"""


class AvlocError(Exception):
    """Bad input, explained: the message names what is wrong (a file, an entry, an option) and the fix."""


class MediaError(AvlocError, ValueError):
    """A media file is missing, empty, truncated or not decodable. The message names the file."""
