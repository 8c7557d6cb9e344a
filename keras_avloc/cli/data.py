"""`avloc data ...`: dataset tools. Each action lives in its own module with `register(subparsers)`."""

import importlib

from keras_avloc.cli import ExampleFormatter

DATA_ACTIONS = ["data_extract", "data_tfrecord", "data_stamps", "data_sphere", "data_pairs"]


def register(subparsers):
    parser = subparsers.add_parser(
        "data",
        help="build, convert and extract datasets",
        formatter_class=ExampleFormatter,
        epilog="Examples:\n  avloc data extract videos/ datasets/mine\n"
        "  avloc data to-tfrecord datasets/mine shards/\n  avloc data stamps --out datasets/stamps\n"
        "  avloc data sphere --out datasets/sphere\n  avloc data pairs datasets/stamps --split test",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    for name in DATA_ACTIONS:
        importlib.import_module(f"keras_avloc.cli.{name}").register(actions)
    parser.set_defaults(func=lambda args: parser.print_help())
