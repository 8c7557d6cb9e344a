"""`avloc pretrain-image`: the ImageNet stand-in (a ResNet-18 that recognises the Tux Paint stamps that never
sound in a benchmark), saved as weights that `avloc train --init-image-weights` loads."""

import json
import os

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types

EPILOG = """Examples:
  avloc pretrain-image --data datasets/stamps-demo --out standin/resnet18_w16.weights.h5 --width 16
  avloc pretrain-image --classes "cello,frog,zebra" --out standin/w16.weights.h5 --epochs 20
  avloc train --method lvs --data datasets/stamps-demo --out runs/lvs --width 16 \\
      --init-image-weights standin/resnet18_w16.weights.h5

The stamps of the benchmark's sounding classes (--data ROOT/classes.json, or --classes) are never shown.
Writes OUT (the weights), OUT without .weights.h5 plus .json (accuracy on held-out images, the stamps used)
and a .work/ folder (rendered images, resume state). Re-running the same command resumes or does nothing.
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "pretrain-image",
        help="train the ImageNet stand-in: a ResNet-18 that recognises stamps the benchmark never sounds",
        description="Every paper starts its image encoder from ImageNet weights, which cannot be downloaded "
        "here. This trains the same ResNet-18 to recognise about 500 Tux Paint stamps (clip-art and photos; "
        "each stamp is a class) composited on the stamps benchmark's training backgrounds, leaving out the "
        "benchmark's sounding classes. It is an honest stand-in, not ImageNet.",
        formatter_class=ExampleFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--out", required=True, metavar="FILE.weights.h5", help="weights file to write")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--data", metavar="ROOT", help="a stamps benchmark: its classes.json names the classes to leave out")
    group.add_argument("--classes", help="comma-separated sounding classes to leave out")
    parser.add_argument("--width", type=types.integer(1, 1024), default=64,
                        help="ResNet-18 base width (the width of the models that will load it; default 64)")
    parser.add_argument("--image-size", type=types.IMAGE_SIZE, default=112, help="training crop side (default 112)")
    parser.add_argument("--per-class", type=types.integer(2, 10000), default=16, help="images per stamp (default 16)")
    types.add_standin_training_arguments(parser, epochs=12, seed_help="rendering and training seed")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.io.files import check_output_file

    check_output_file(args.out)
    if args.data:
        path = os.path.join(args.data, "classes.json")
        if not os.path.isfile(path):
            raise CliError(f"--data {args.data}: no classes.json (is it a stamps benchmark built by `avloc data "
                           "stamps`?); or pass --classes.")
        with open(path, encoding="utf-8") as handle:
            classes = json.load(handle)
    else:
        classes = [name.strip() for name in args.classes.split(",") if name.strip()]
    from keras_avloc.training.pretrain import pretrain_image

    summary = pretrain_image(args.out, classes, width=args.width, image_size=args.image_size,
                             per_class=args.per_class, epochs=args.epochs, batch_size=args.batch_size,
                             learning_rate=args.lr, seed=args.seed, mixed_precision=args.mixed_precision,
                             workers=args.workers, verbose=2 if args.quiet else "auto")
    print(f"wrote {args.out}: {summary['classes']} stamp classes, held-out accuracy {summary['val_accuracy']:.3f}")
    return 0
