"""`avloc data to-tfrecord ROOT OUT_DIR [--split S] [--shards N]`: pack a split into TFRecord shards."""

import os

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types


def register(subparsers):
    parser = subparsers.add_parser(
        "to-tfrecord",
        help="pack a dataset split into TFRecord shards (large datasets, multi-worker input)",
        description="Converts ROOT/<split>.json (frames/*.jpg + audio/*.wav, or video/*.mp4) into\n"
        "OUT_DIR/<split>-SSSSS-of-NNNNN.tfrecord shards plus OUT_DIR/<split>.meta.json.\n"
        "Bad clips are skipped and listed unless --strict is given.\n"
        "Read the shards with make_dataset(..., tfrecord_dir=OUT_DIR).",
        formatter_class=ExampleFormatter,
        epilog="Examples:\n  avloc data to-tfrecord datasets/vggss shards/vggss --split train --shards 64\n"
        "  avloc data to-tfrecord datasets/mine shards/mine --split test --shards 1 --strict",
    )
    parser.add_argument("root", metavar="ROOT", help="dataset folder in the keras-avloc layout (see data/README.md)")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder for the shards (created)")
    parser.add_argument("--split", default="train", help="split to convert, i.e. ROOT/<split>.json (default: train)")
    parser.add_argument("--shards", type=types.integer(1, 100000), default=8, help="number of shard files (default: 8)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad clip instead of skipping it")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.io.files import check_output_folder

    if not os.path.isdir(args.root):
        raise CliError(f"{args.root}: no such dataset folder; pass the folder holding frames/, audio/ and <split>.json")
    check_output_folder(args.out_dir, "OUT_DIR")
    from keras_avloc.data.tfrecord import write_tfrecords
    from keras_avloc.io.media import MediaError

    try:
        result = write_tfrecords(args.root, args.out_dir, split=args.split, shards=args.shards,
                                 on_error="raise" if args.strict else "skip")
    except MediaError as err:
        raise CliError(f"{err} (or drop --strict to skip bad clips)") from None
    print(f"wrote {result['written']} clips to {len(result['shards'])} shards in {args.out_dir} ({result['meta']})")
    if result["skipped"]:
        print(f"skipped {len(result['skipped'])} bad clip(s):")
        for file_id, reason in result["skipped"][:20]:
            print(f"  {file_id}: {reason}")
    return 0
