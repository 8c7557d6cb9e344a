"""`avloc data pairs ROOT [--split S] [--out-split NAME] [--per-source]`: the splits of the newer protocols from an
existing one: positives + non-sounding pairs (extended), or one entry per source of each mixture (IS3-style)."""

import os

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types


def register(subparsers):
    parser = subparsers.add_parser(
        "pairs",
        help="add non-sounding pairs to a split (SLAVC's extended protocol on any dataset)",
        description="Writes ROOT/<out-split>.json: the records of ROOT/<split>.json plus, for each, its frame with the "
        "audio of a clip of another class (Extended VGG-SS / Flickr build their non-sounding pairs so). Score it "
        "with `avloc evaluate --split <out-split>`: AP, max-F1 and LocAcc over both.",
        formatter_class=ExampleFormatter,
        epilog="Examples:\n  avloc data pairs datasets/stamps --split test\n"
        "  avloc evaluate --checkpoint runs/lvs/model.keras --data datasets/stamps --split test_pairs "
        "--protocol stamps --baselines --out runs/lvs_pairs\n"
        "  avloc data pairs datasets/stamps --split test_mix --per-source\n"
        "  avloc evaluate --checkpoint runs/lvs/model.keras --data datasets/stamps --split test_mix_is3 "
        "--protocol is3 --out runs/lvs_is3",
    )
    parser.add_argument("root", metavar="ROOT", help="dataset folder in the keras-avloc layout")
    parser.add_argument("--split", default="test", help="the split to extend (default: test)")
    parser.add_argument("--out-split", default=None, help="name of the written split (default: <split>_pairs)")
    parser.add_argument("--seed", type=types.SEED, default=0, help="the donor draw (same seed, same pairs)")
    parser.add_argument("--per-source", action="store_true",
                        help="instead: one entry per on-screen source of each mixture of --split, the scene's frame with "
                        "that source's own recording and box (IS3-style; score with --protocol is3)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output split")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.data import load_split, write_split
    from keras_avloc.data.annotations import split_path
    from keras_avloc.data.protocols import nonsounding_pairs, per_source_records

    if not os.path.isdir(args.root):
        raise CliError(f"{args.root}: no such dataset folder; pass the folder holding <split>.json")
    out_split = args.out_split or f"{args.split}_{'is3' if args.per_source else 'pairs'}"
    path = split_path(args.root, out_split)
    if os.path.exists(path) and not args.overwrite:
        raise CliError(f"{path} exists; pass --overwrite to replace it or --out-split to name another split.")
    records = load_split(os.path.abspath(args.root), args.split)  # absolute paths: written relative to ROOT
    if args.per_source:
        entries = per_source_records(records)
        if not entries:
            raise CliError(f"{split_path(args.root, args.split)} has no mixtures with on-screen sources of their own "
                           "audio; build one with `avloc data stamps --n-mix N` (test_mix).")
        write_split(entries, path)
        print(f"wrote {path}: {len(entries)} entries, one per on-screen source of {args.split}'s mixtures")
        return 0
    pairs = nonsounding_pairs(records, seed=args.seed)
    if not pairs:
        raise CliError(f"{split_path(args.root, args.split)} has no clips with a visible source to pair.")
    write_split(list(records) + pairs, path)
    print(f"wrote {path}: {len(records)} records of {args.split} + {len(pairs)} non-sounding pairs")
    return 0
