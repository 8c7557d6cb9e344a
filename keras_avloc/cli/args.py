"""Argument types for the `avloc` subcommands: every numeric option is range-checked by argparse, so a bad
value ends in `avloc train: error: argument --batch-size: must be an integer >= 2, got '0'` (exit 2)."""

import argparse
import math


def integer(minimum=None, maximum=None):
    """An argparse `type` accepting integers in [minimum, maximum]."""

    def parse(text):
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be an integer <= {maximum}, got {text!r}")
        return value

    parse.__name__ = "integer"
    return parse


def number(minimum=None, maximum=None, above=None):
    """An argparse `type` accepting finite floats >= minimum (or > above) and <= maximum."""

    def parse(text):
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum:g}, got {text!r}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be > {above:g}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum:g}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


IMAGE_SIZE = integer(32, 4096)
CLIP_SECONDS = number(minimum=0.1, maximum=600.0)
SAMPLE_RATE = integer(1000, 384000)
WORKERS = integer(1, 256)
SEED = integer(0, 2**31 - 1)


def median_or_number(text):
    """An argparse `type`: the word "median" or a finite number."""
    if text == "median":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'median' or a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be 'median' or a finite number, got {text!r}")
    return value


def add_standin_training_arguments(parser, epochs, seed_help):
    """The options the two stand-in commands share (`avloc pretrain-image`, `avloc pretrain-audio`): --epochs,
    --batch-size, --lr, --seed, --mixed-precision, --workers, --quiet."""
    parser.add_argument("--epochs", type=integer(1, 10000), default=epochs, help=f"epochs (default {epochs})")
    parser.add_argument("--batch-size", type=integer(2, 4096), default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=number(above=0, maximum=10), default=2e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=SEED, default=0, help=seed_help)
    parser.add_argument("--mixed-precision", choices=["bf16"], default=None, help="bfloat16 mixed precision")
    parser.add_argument("--workers", type=WORKERS, default=None, help="rendering processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch")
