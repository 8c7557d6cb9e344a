"""The `avloc` command line: one module per subcommand, each exposing `register(subparsers)`.

Subcommand modules import TensorFlow lazily (inside their run functions) so `avloc --help` is instant.

Errors: every bad input ends in a one-line message naming the file or option and the fix, exit code 2
(`keras_avloc.io.errors.AvlocError` and the operating system's file errors); Ctrl-C exits 130 keeping
finished work. Anything else is a bug: a short message (exit 1) asks for a report, and `AVLOC_DEBUG=1`
shows the traceback.
"""

import argparse
import importlib
import os
import sys
import warnings

from keras_avloc import __version__
from keras_avloc.io.errors import AvlocError

SUBCOMMAND_MODULES = [
    "info",
    "port_weights",
    "download",
    "data",
    "pretrain_image",
    "pretrain_audio",
    "train",
    "data_service",
    "evaluate",
    "localize",
    "demo",
]


class ExampleFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the hand-wrapped examples in each subcommand's epilog."""


class CliError(AvlocError):
    """An error whose message tells the user what is wrong and how to fix it (no traceback)."""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="avloc",
        description="keras-avloc: audio-visual sound-source localisation in Keras 3.",
        formatter_class=ExampleFormatter,
        epilog="Examples:\n  avloc info\n  avloc demo\n  avloc train --help",
    )
    parser.add_argument("--version", action="version", version=f"keras-avloc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = importlib.import_module(f"keras_avloc.cli.{name}")
        module.register(subparsers)
    return parser


def _message(err):
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and getattr(err, "filename", None) and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text.splitlines()[0] if len(text) > 2000 else text


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the CLI
    # Keras warns about every finite tf.data epoch and about its own default shuffle flag: noise for our users.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    warnings.filterwarnings("ignore", message=".*shuffle=True. was passed")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, or a bad argument (argparse printed why): an exit code, not a throw
        return exit_request.code if isinstance(exit_request.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    command = " ".join(part for part in (args.command, getattr(args, "data_command", None)) if part)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("\nInterrupted. Finished work is kept; re-run the same command to resume.", file=sys.stderr)
        return 130
    except (AvlocError, OSError) as err:
        if os.environ.get("AVLOC_DEBUG") and not isinstance(err, AvlocError):
            raise
        print(f"avloc {command}: error: {_message(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the last resort: a bug, reported without a wall of traceback
        if os.environ.get("AVLOC_DEBUG"):
            raise
        print(f"avloc {command}: internal error: {type(err).__name__}: {_message(err)}\n"
              "This is a bug in keras-avloc; please report it with the command you ran "
              "(AVLOC_DEBUG=1 shows the traceback).", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
