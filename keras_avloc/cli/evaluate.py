"""`avloc evaluate`: score a checkpoint or saved heatmaps with the published protocols."""

import os

from keras_avloc.cli import CliError, ExampleFormatter

PROTOCOL_CHOICES = ["vggss", "flickr", "stamps", "stamps-mix", "music-duet"]

EPILOG = """Examples:
  # score saved heatmaps (npz with `files` [N] and `heatmaps` [N, h, w]) against ROOT/test.json
  avloc evaluate --heatmaps maps.npz --data data/vggss --out runs/eval --baselines

  # evaluate a trained model on Flickr-SoundNet
  avloc evaluate --checkpoint runs/ezvsl/model.keras --data data/flickr --protocol flickr --out runs/flickr

  # synthetic stamps with silent / off-screen samples (adds SLAVC's AP, max-F1, precision)
  avloc evaluate --checkpoint model.keras --data data/stamps --protocol stamps --out runs/stamps

  # two-source mixtures: adds per-source cIoU@0.3 / AUC, PIAP and CAP (AVGN localises each source)
  avloc evaluate --checkpoint runs/avgn/model.keras --data data/stamps --split test_mix \
      --protocol stamps-mix --out runs/avgn_mix

Outputs in --out: metrics.json (model + baselines), success_curve.png, best_worst.png.
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate",
        help="compute cIoU@0.5 / AUC (and protocol extras) for a model or saved heatmaps",
        description="Evaluate sound-source localisation exactly as the official evaluators do.",
        formatter_class=ExampleFormatter,
        epilog=EPILOG,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a saved model (.keras) to run over the split")
    source.add_argument("--heatmaps", help="an .npz with `files` (str [N]) and `heatmaps` ([N, h, w])")
    parser.add_argument("--data", required=True, metavar="ROOT", help="dataset root holding <split>.json")
    parser.add_argument("--split", default="test", help="annotation split (ROOT/<split>.json); default test")
    parser.add_argument("--protocol", default="vggss", choices=PROTOCOL_CHOICES, help="evaluation protocol")
    parser.add_argument("--baselines", action="store_true", help="also score centre prior, random and objectness")
    parser.add_argument(
        "--objectness-weights",
        metavar="FILE.weights.h5",
        help="with --heatmaps --baselines: ImageNet ResNet-18 weights (from `avloc port-weights`) for the "
        "objectness baseline (with --checkpoint the model's own image encoder is used)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size when running a checkpoint")
    parser.add_argument(
        "--resize",
        default="align_corners",
        choices=["align_corners", "half_pixel", "bicubic_align_corners"],
        help="heatmap upsampling: align_corners (bilinear, EZ-VSL/FNAC, default), half_pixel (LVS/OpenCV) "
        "or bicubic_align_corners (SLAVC/AVGN)",
    )
    parser.add_argument("--image-size", type=int, default=None,
                        help="model input size (default: the checkpoint's training setting from train_state.json "
                        "next to it, else 224)")
    parser.add_argument("--clip-seconds", type=float, default=None,
                        help="audio clip length (default: the checkpoint's training setting, else 3.0)")
    parser.add_argument("--class-conditioned", action="store_true",
                        help="mixture protocols with AVGN: localise the ground-truth classes of the sources (the "
                        "paper's protocol) instead of the predicted ones")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def training_settings(checkpoint):
    """The `settings` recorded by `avloc train` in train_state.json next to `checkpoint` ({} if none)."""
    import json

    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "train_state.json")
    try:
        with open(path) as handle:
            return dict(json.load(handle).get("settings") or {})
    except (OSError, ValueError, AttributeError):
        return {}


def run(args):
    from keras_avloc.metrics import report

    if not os.path.isdir(args.data):
        raise CliError(f"--data {args.data} is not a directory; point it at a dataset root holding {args.split}.json.")
    split_file = os.path.join(args.data, f"{args.split}.json")
    if not os.path.isfile(split_file):
        raise CliError(f"{split_file} not found; pick an existing split with --split or build the dataset first.")
    try:
        if args.heatmaps:
            encoder = _objectness_encoder(args.objectness_weights) if args.baselines else None
            metrics = report.evaluate_heatmaps(
                args.heatmaps,
                args.data,
                split=args.split,
                protocol=args.protocol,
                out_dir=args.out,
                baselines=args.baselines,
                image_encoder=encoder,
                resize=args.resize,
                progress=not args.no_progress,
            )
        else:
            if not os.path.isfile(args.checkpoint):
                raise CliError(f"checkpoint {args.checkpoint} not found; pass the .keras file written by `avloc train`.")
            from keras_avloc.models import load_model

            model = load_model(args.checkpoint, compile=False)
            settings = training_settings(args.checkpoint)
            image_size = args.image_size or int(settings.get("image_size") or 224)
            clip_seconds = args.clip_seconds or float(settings.get("clip_seconds") or 3.0)
            metrics = report.evaluate_model(
                model,
                args.data,
                split=args.split,
                protocol=args.protocol,
                out_dir=args.out,
                batch_size=args.batch_size,
                baselines=args.baselines,
                resize=args.resize,
                progress=not args.no_progress,
                image_size=image_size,
                clip_seconds=clip_seconds,
                class_conditioned=args.class_conditioned,
            )
    except (FileNotFoundError, ValueError) as err:
        raise CliError(str(err)) from err
    print(metrics["table"])
    multi = metrics["model"].get("multi_source")
    if multi:
        print(f"per-source: cIoU@0.3 {multi['ciou@0.3']:.4f}  AUC {multi['auc']:.4f}  PIAP {multi['piap']:.4f}"
              + (f"  CAP {multi['cap']:.4f}" if "cap" in multi else "") + f"  ({multi['num_mixtures']} mixtures)")
    if args.baselines and "objectness" not in metrics["baselines"]:
        print("objectness baseline skipped: pass --objectness-weights (ImageNet ResNet-18) or use --checkpoint")
    skipped = metrics.get("skipped") or {}
    if skipped.get("heatmaps_without_record") or skipped.get("records_without_heatmap"):
        print(
            f"skipped: {skipped['heatmaps_without_record']} heatmaps without a record, "
            f"{skipped['records_without_heatmap']} records without a heatmap"
        )
    print(f"wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


def _objectness_encoder(weights_path):
    """ResNet-18 with ported ImageNet weights as the objectness encoder, or None without a path."""
    if not weights_path:
        return None
    if not os.path.isfile(weights_path):
        raise CliError(
            f"--objectness-weights {weights_path} not found; create it with "
            "`avloc port-weights resnet18-f37072fd.pth resnet18_imagenet.weights.h5`."
        )
    from keras_avloc.backbones import ResNet18

    encoder = ResNet18()
    try:
        encoder.load_weights(weights_path)
    except Exception as err:  # Keras raises several types for mismatched files
        raise CliError(f"{weights_path} does not hold ResNet-18 weights ({err}); re-run `avloc port-weights`.") from err
    return encoder
