"""`avloc port-weights` (placeholder until its issue lands)."""

from keras_avloc.cli import CliError


def register(subparsers):
    parser = subparsers.add_parser("port-weights", help="(not implemented yet)")
    parser.set_defaults(func=run)


def run(args):
    raise CliError("not implemented yet")
