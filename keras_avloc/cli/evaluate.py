"""`avloc evaluate`: score a checkpoint or saved heatmaps with the published protocols."""

import os

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types

PROTOCOL_CHOICES = ["vggss", "flickr", "stamps", "stamps-mix", "music-duet", "stamps-classes", "stamps-sound",
                    "stamps-speech", "sphere", "stamps-interference", "extended-vggss", "extended-flickr", "is3",
                    "negative-audio"]

EPILOG = """Examples:
  # score saved heatmaps (npz with `files` [N] and `heatmaps` [N, h, w]) against ROOT/test.json
  avloc evaluate --heatmaps maps.npz --data data/vggss --out runs/eval --baselines

  # evaluate a trained model on Flickr-SoundNet
  avloc evaluate --checkpoint runs/ezvsl/model.keras --data data/flickr --protocol flickr --out runs/flickr

  # synthetic stamps with silent / off-screen samples (adds SLAVC's AP, max-F1, precision)
  avloc evaluate --checkpoint model.keras --data data/stamps --protocol stamps --out runs/stamps

  # Extended VGG-SS / Flickr (SLAVC): positives + non-sounding pairs; AP, max-F1, LocAcc. ROOT/frames, ROOT/audio
  # and SLAVC's metadata/ lists (vggss_test.csv, vggss.json, vggss_test_plus_silent.csv); Flickr: --gt-dir Annotations
  avloc evaluate --checkpoint model.keras --data data/vggss --protocol extended-vggss --metadata metadata \
      --baselines --out runs/ext_vggss

  # IS3: two objects per image, each with its own audio (cIoU, AUC, iIoU, iAUC): the official download
  # (ROOT/visual_frames, ROOT/audio_wav, --metadata holding synthetic3240_bbox.json) or a per-source split
  avloc evaluate --checkpoint model.keras --data data/is3 --protocol is3 --metadata metadata --out runs/is3
  avloc evaluate --checkpoint model.keras --data data/stamps --protocol is3 --split test_mix_is3 --out runs/is3

  # negative audio (vssl_eval): each frame also with silence, noise and an off-screen clip; pIA, AOC, F.
  # The universal threshold is chosen on --threshold-split (val) unless given
  avloc evaluate --checkpoint model.keras --data data/stamps --protocol negative-audio --passes 3 --out runs/neg

  # two-source mixtures: adds per-source cIoU@0.3 / AUC, PIAP and CAP (AVGN localises each source)
  avloc evaluate --checkpoint runs/avgn/model.keras --data data/stamps --split test_mix \
      --protocol stamps-mix --out runs/avgn_mix

  # class-aware (CSOL): which object sounds, per class, on 2x2 mosaics or duets with silent objects
  avloc evaluate --checkpoint runs/csol2/model.keras --data data/stamps --split test_mosaic \
      --protocol stamps-classes --assign-split val --out runs/csol_mosaic

  # IEr's interferences: class-aware AUC / NSA per scenario (level differences, off-screen sound, silent
  # objects, combined); --no-silent-filter / --no-offscreen-filter / --mask-variant inspect IEr's filters
  avloc evaluate --checkpoint runs/ier2/model.keras --data data/stamps --protocol stamps-interference \
      --split test_interf --out runs/ier_interf

  # DenseAV: sound- and speech-prompted segmentation (mAP, mIoU), retrieval recall@k, head disentanglement
  avloc evaluate --checkpoint runs/denseav/model.keras --data data/stamps --protocol stamps-sound --out runs/da_sound
  avloc evaluate --checkpoint runs/denseav/model.keras --data data/stamps --protocol stamps-speech \
      --split test_speech_unseen --out runs/da_speech_unseen

  # AVC / AVSA on 360° clips: direction-of-arrival error and panorama cIoU of the sweep map beside the
  # steered-response power, the intensity vector and the priors; --probes adds AVC-Bin / AVSA-Bin
  avloc evaluate --checkpoint runs/avsa/model.keras --data data/sphere --protocol sphere --probes --out runs/sph

Outputs in --out: metrics.json (model + baselines), per_sample.json, success_curve.png, best_worst.png.
Unreadable clips and records whose ground truth cannot be built are skipped, counted and named in
metrics.json (`skipped`); --strict stops at the first one instead.
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
    parser.add_argument("--split", default=None,
                        help="annotation split (ROOT/<split>.json); default test (stamps-speech: test_speech)")
    parser.add_argument("--protocol", default="vggss", choices=PROTOCOL_CHOICES, help="evaluation protocol")
    parser.add_argument("--baselines", action="store_true", help="also score centre prior, random and objectness")
    parser.add_argument(
        "--objectness-weights",
        metavar="FILE.weights.h5",
        help="ImageNet ResNet-18 weights (from `avloc port-weights`): the objectness baseline with --heatmaps "
        "--baselines, and the extended protocols' objectness and --saliency-alpha (else the model's own encoder)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--batch-size", type=types.integer(1, 4096), default=16,
                        help="batch size when running a checkpoint")
    parser.add_argument(
        "--resize",
        default=None,
        choices=["align_corners", "half_pixel", "bicubic_align_corners"],
        help="heatmap upsampling: align_corners (bilinear, EZ-VSL/FNAC; default), half_pixel (LVS/OpenCV) "
        "or bicubic_align_corners (SLAVC/AVGN; default of the extended protocols)",
    )
    parser.add_argument("--metadata", metavar="DIR", default=None,
                        help="extended-*: the folder of SLAVC's lists (<set>_test.csv, <set>_test_plus_silent.csv, "
                        "vggss.json); default ROOT/metadata")
    parser.add_argument("--mask-ground-truth", action="store_true",
                        help="is3: score against each entry's mask (the official seg list, synthetic3240_seg.json, "
                        "or the split's masks) instead of its box")
    parser.add_argument("--universal-threshold", type=types.median_or_number, default=None, metavar="NUMBER",
                        help="negative-audio: one threshold for every map, on the scale of the model's maps (default: "
                        "chosen on --threshold-split, the candidate with the best F)")
    parser.add_argument("--threshold-split", default="val",
                        help="negative-audio: the split the universal threshold is chosen on (default val)")
    parser.add_argument("--passes", type=types.integer(1, 10), default=10,
                        help="negative-audio: passes with fresh noise and off-screen draws (the official ten seeds; "
                        "fewer: the first N)")
    parser.add_argument("--official-log-quirk", action="store_true",
                        help="negative-audio: noise and silence spectrograms without the log, as vssl_eval computes "
                        "them for EZ-VSL / SLAVC / FNAC (default: with the log, like every other input)")
    parser.add_argument("--saliency-alpha", type=types.number(minimum=0, maximum=1), default=None, metavar="ALPHA",
                        help="extended-*: fuse each map with object saliency as SLAVC's published numbers do "
                        "(alpha (cos + 1) / 2 + (1 - alpha) objectness / 2.5; its README: 0.9); the saliency comes "
                        "from --objectness-weights (ImageNet ResNet-18, as officially) or the model's image encoder")
    parser.add_argument("--gt-dir", metavar="DIR", default=None,
                        help="extended-flickr: the Flickr-SoundNet box files (<id>.xml); default ROOT/Annotations")
    parser.add_argument("--pred-threshold", type=types.median_or_number, default="median", metavar="median|NUMBER",
                        help="binarise each map at its median (default; SLAVC's --relative_prediction, which its "
                        "published numbers use) or at a fixed value on the map's own scale (SLAVC's pred_thr 0.5)")
    parser.add_argument("--image-size", type=types.IMAGE_SIZE, default=None,
                        help="model input size (default: the model's own setting, i.e. its training size, else 224)")
    parser.add_argument("--clip-seconds", type=types.CLIP_SECONDS, default=None,
                        help="audio clip length (default: the model's own setting, else 3.0)")
    parser.add_argument("--image-mode", choices=["squash", "crop"], default=None,
                        help="test geometry: squash to a square (EZ-VSL) or resize + centre crop (LVS); default: "
                        "the model's own setting")
    parser.add_argument("--strict-median", action="store_true", default=None,
                        help="binarise maps with > instead of >= at the median (the original LVS test script; "
                        "default: the model's own setting)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable clip or ground truth instead of skipping and counting it")
    parser.add_argument("--class-conditioned", action="store_true",
                        help="AVGN: localise the ground-truth class of each clip (or of each source of a mixture), "
                        "the paper's test protocol, instead of the classes predicted from the audio")
    parser.add_argument("--assign-split", default="val",
                        help="stamps-classes / stamps-interference: labelled single-source split that fits the "
                        "cluster -> class assignment")
    parser.add_argument("--assignment", choices=["hungarian", "many-to-one"], default="hungarian",
                        help="stamps-classes / -interference: one-to-one Hungarian matching (default) or the official "
                        "many-to-one")
    parser.add_argument("--assign-by", choices=["audio", "visual"], default="audio",
                        help="stamps-classes / -interference: a clip's cluster from the stage-one audio classifier "
                        "(default) or "
                        "from its object feature (nearest dictionary entry)")
    parser.add_argument("--no-silent-filter", action="store_true",
                        help="IEr: class-agnostic audio-visual map for every class (switches the silent-object "
                        "filter off)")
    parser.add_argument("--no-offscreen-filter", action="store_true",
                        help="IEr: class weights from the audio alone (switches the off-screen filter off)")
    parser.add_argument("--mask-variant", default=None,
                        choices=["fixed", "batch_max", "image_max", "gap", "batch_mean"],
                        help="IEr: the visual-mask threshold of the off-screen filter (default: the model's)")
    parser.add_argument("--sound-split", default="test",
                        help="stamps-speech: the sound pairs a two-head model's heads are told apart from")
    parser.add_argument("--probes", action="store_true",
                        help="sphere: also train and score the AVC-Bin / AVSA-Bin probes on frozen features")
    parser.add_argument("--probe-split", default="train", help="sphere: the split the probes train on (default train)")
    parser.add_argument("--probe-clips", type=types.integer(2, 10_000_000), default=None,
                        help="sphere: train the probes on the first N clips of --probe-split (default: all)")
    parser.add_argument("--listening", action="store_true",
                        help="the listening control: also score every frame with another class's audio (seeded) and "
                        "report how much of the AUC margin over the random map that takes away (with --baselines)")
    parser.add_argument("--audio-level-db", type=types.number(minimum=-80, maximum=0), default=None, metavar="DBFS",
                        help="scale every clip to this RMS level before the spectrogram (default: the model's "
                        "own setting, recorded by `avloc train --audio-level-db`)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.evaluation import report
    from keras_avloc.io.files import check_output_folder

    if args.split is None:
        args.split = {"stamps-speech": "test_speech", "stamps-interference": "test_interf",
                      "is3": "test_mix_is3"}.get(args.protocol, "test")
    if not os.path.isdir(args.data):
        raise CliError(f"--data {args.data} is not a directory; point it at a dataset root holding {args.split}.json.")
    check_output_folder(args.out)
    if args.protocol.startswith("extended-"):
        return _run_extended(args)
    if args.pred_threshold != "median" or args.saliency_alpha is not None:
        raise CliError(f"--pred-threshold and --saliency-alpha apply to the extended protocols, not --protocol "
                       f"{args.protocol}.")
    if args.protocol == "is3":
        return _run_is3(args)
    if args.protocol == "negative-audio":
        return _run_negative_audio(args)
    args.resize = args.resize or "align_corners"
    if args.protocol in ("stamps-classes", "stamps-interference"):
        return _run_classes(args)
    if args.protocol in ("stamps-sound", "stamps-speech"):
        return _run_prompted(args)
    if args.protocol == "sphere":
        return _run_sphere(args)
    if args.heatmaps:
        encoder = _objectness_encoder(args.objectness_weights) if args.baselines else None
        metrics = report.evaluate_heatmaps(
            args.heatmaps, args.data, split=args.split, protocol=args.protocol, out_dir=args.out,
            baselines=args.baselines, image_encoder=encoder, resize=args.resize, progress=not args.no_progress,
            strict=args.strict, strict_median=bool(args.strict_median),
        )
    else:
        from keras_avloc.models import load_model

        model = load_model(args.checkpoint, compile=False)
        metrics = report.evaluate_model(
            model, args.data, split=args.split, protocol=args.protocol, out_dir=args.out,
            batch_size=args.batch_size, baselines=args.baselines, resize=args.resize,
            progress=not args.no_progress, image_size=args.image_size, clip_seconds=args.clip_seconds,
            image_mode=args.image_mode, strict_median=args.strict_median,
            class_conditioned=args.class_conditioned, strict=args.strict, listening=args.listening,
            audio_level_db="model" if args.audio_level_db is None else args.audio_level_db,
        )
    print(metrics["table"])
    if metrics["model"].get("extended_table"):
        from keras_avloc.evaluation.extended import extended_results_table

        print("\nExtended protocol (SLAVC):\n" + extended_results_table(metrics))
    multi = metrics["model"].get("multi_source")
    if multi:
        print(f"per-source: cIoU@0.3 {multi['ciou@0.3']:.4f}  AUC {multi['auc']:.4f}  PIAP {multi['piap']:.4f}"
              + (f"  CAP {multi['cap']:.4f}" if "cap" in multi else "") + f"  ({multi['num_mixtures']} mixtures)")
    if args.baselines and "objectness" not in metrics["baselines"]:
        print("objectness baseline skipped: pass --objectness-weights (ImageNet ResNet-18) or use --checkpoint")
    for line in skipped_lines(metrics):
        print(line)
    print(f"wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


def _input_settings(args):
    """The model-input options of a checkpoint's evaluation; "model" keeps the model's own level setting."""
    return dict(image_size=args.image_size, clip_seconds=args.clip_seconds, image_mode=args.image_mode,
                audio_level_db="model" if args.audio_level_db is None else args.audio_level_db)


def _report(table, metrics, out):
    """Prints a protocol's table, what was skipped and where metrics.json went; the exit code."""
    print(table)
    for line in skipped_lines(metrics):
        print(line)
    print(f"wrote {os.path.join(out, 'metrics.json')}")
    return 0


def _run_extended(args):
    from keras_avloc.evaluation.extended import evaluate_extended, extended_results_table

    testset = args.protocol.split("-", 1)[1]
    options = dict(out_dir=args.out, baselines=args.baselines, resize=args.resize or "bicubic_align_corners",
                   progress=not args.no_progress, strict=args.strict, threshold=args.pred_threshold)
    if args.heatmaps:
        options["image_encoder"] = _objectness_encoder(args.objectness_weights) if args.baselines else None
        metrics = evaluate_extended(None, args.data, testset, args.metadata, args.gt_dir, heatmaps=args.heatmaps,
                                    saliency_alpha=args.saliency_alpha, strict_median=bool(args.strict_median), **options)
    else:
        from keras_avloc.models import load_model

        model = load_model(args.checkpoint, compile=False)
        encoder = _objectness_encoder(args.objectness_weights)
        if args.saliency_alpha is not None and encoder is None:
            print("saliency from the model's own image encoder (the official script uses an ImageNet ResNet-18: "
                  "pass --objectness-weights)")
        metrics = evaluate_extended(model, args.data, testset, args.metadata, args.gt_dir,
                                    saliency_alpha=args.saliency_alpha, saliency_encoder=encoder,
                                    objectness_encoder=encoder, batch_size=args.batch_size,
                                    strict_median=args.strict_median, **_input_settings(args), **options)
    return _report(extended_results_table(metrics), metrics, args.out)


def _run_is3(args):
    from keras_avloc.data import load_split
    from keras_avloc.data.annotations import split_path
    from keras_avloc.data.protocols import IS3_FILES, is3_records
    from keras_avloc.evaluation.is3 import evaluate_is3, is3_results_table

    official = os.path.join(args.metadata or os.path.join(args.data, "metadata"), IS3_FILES["boxes"])
    missing = None
    if args.metadata or (not os.path.exists(split_path(args.data, args.split)) and os.path.isfile(official)):
        records, missing = is3_records(args.data, os.path.dirname(official), masks=args.mask_ground_truth)
    else:
        records = load_split(args.data, args.split)
    model = None
    if args.checkpoint:
        from keras_avloc.models import load_model

        model = load_model(args.checkpoint, compile=False)
    settings = _input_settings(args)
    metrics = evaluate_is3(model, args.data, records, missing=missing, heatmaps=args.heatmaps, out_dir=args.out,
                           batch_size=args.batch_size, baselines=args.baselines or bool(args.checkpoint),
                           progress=not args.no_progress, strict=args.strict, resize=args.resize or "align_corners",
                           ground_truth="mask" if args.mask_ground_truth else "box",
                           **(settings if args.checkpoint else {}))
    return _report(is3_results_table(metrics), metrics, args.out)


def _run_negative_audio(args):
    from keras_avloc.data import load_split
    from keras_avloc.evaluation.negative_audio import (OFFICIAL_SEEDS, choose_threshold, evaluate_negative_audio,
                                                       negative_audio_table)
    from keras_avloc.models import load_model

    if not args.checkpoint:
        raise CliError("--protocol negative-audio needs --checkpoint (the negative maps come from the model).")
    if args.universal_threshold == "median":
        raise CliError("--universal-threshold takes a number (leave it out to choose one on --threshold-split).")
    model = load_model(args.checkpoint, compile=False)
    settings = _input_settings(args)
    common = dict(batch_size=args.batch_size, progress=not args.no_progress, official_log_quirk=args.official_log_quirk)
    encoder = getattr(model, "image_encoder", None)
    baselines = ("center",) + (("objectness",) if encoder is not None else ())
    threshold, chosen_on = args.universal_threshold, "given (--universal-threshold)"
    if threshold is None:
        threshold, _ = choose_threshold(model, args.data, load_split(args.data, args.threshold_split), **common,
                                        baselines=baselines, encoder=encoder, **settings)
        chosen_on = f"chosen on {args.threshold_split} (best F among the candidates of choose_threshold)"
    metrics = evaluate_negative_audio(model, args.data, load_split(args.data, args.split), threshold, out_dir=args.out,
                                      seeds=OFFICIAL_SEEDS[:args.passes], strict=args.strict, chosen_on=chosen_on,
                                      encoder=encoder, **common, **settings)
    return _report(negative_audio_table(metrics), metrics, args.out)


def _run_classes(args):
    from keras_avloc.evaluation.classes import (classes_table, evaluate_classes, evaluate_interference,
                                                interference_table)
    from keras_avloc.models import load_model
    from keras_avloc.models.contract import InterferenceFilters

    if not args.checkpoint:
        raise CliError(f"--protocol {args.protocol} needs --checkpoint (class maps come from the model).")
    model = load_model(args.checkpoint, compile=False)
    options = {}
    if args.no_silent_filter or args.no_offscreen_filter or args.mask_variant:
        if not isinstance(model, InterferenceFilters):
            raise CliError("--no-silent-filter / --no-offscreen-filter / --mask-variant apply to IEr stage-two "
                           f"models; {args.checkpoint} holds a {type(model).__name__}.")
        # An unset flag keeps the model's own setting (None).
        options = {"silent_filter": False if args.no_silent_filter else None,
                   "offscreen_filter": False if args.no_offscreen_filter else None, "mask_variant": args.mask_variant}
    common = dict(assign_split=args.assign_split, rule=args.assignment, out_dir=args.out, batch_size=args.batch_size,
                  baselines=True, progress=not args.no_progress, assign_by=args.assign_by,
                  class_maps_options=options or None)
    if args.protocol == "stamps-interference":
        metrics = evaluate_interference(model, args.data, split=args.split, **common)
    else:
        metrics = evaluate_classes(model, args.data, split=args.split, **common)
    print(f"{metrics['split']}: {metrics['maps']}")
    print(classes_table(metrics))
    if "groups" in metrics:
        print(interference_table(metrics))
    print(f"wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


def _run_prompted(args):
    from keras_avloc.evaluation.prompted import evaluate_prompted, prompted_table
    from keras_avloc.models import load_model

    if not args.checkpoint:
        raise CliError(f"--protocol {args.protocol} needs --checkpoint (the maps and scores come from the model).")
    model = load_model(args.checkpoint, compile=False)
    metrics = evaluate_prompted(model, args.data, protocol=args.protocol, split=args.split, out_dir=args.out,
                                batch_size=args.batch_size, progress=not args.no_progress,
                                sound_split=args.sound_split, clip_seconds=args.clip_seconds)
    print(prompted_table(metrics))
    print(f"wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


def _run_sphere(args):
    from keras_avloc.evaluation.sphere import run_sphere_protocol
    from keras_avloc.models import load_model

    if not args.checkpoint:
        raise CliError("--protocol sphere needs --checkpoint (an AVC / AVSA model); the signal-processing baselines "
                       "are scored beside it.")
    model = load_model(args.checkpoint, compile=False)
    if getattr(model, "data_kind", "frames") != "sphere":
        raise CliError(f"--protocol sphere scores models of 360° clips (AVC, AVSA); {args.checkpoint} holds a "
                       f"{type(model).__name__}.")
    metrics = run_sphere_protocol(model, args.data, split=args.split, out_dir=args.out, probes=args.probes,
                                  probe_split=args.probe_split, progress=not args.no_progress,
                                  probe_clips=args.probe_clips)
    print(f"{args.split}: {metrics['rows'][next(iter(metrics['rows']))]['clips']} clips, sweep grid "
          f"{metrics['grid'][0]} x {metrics['grid'][1]}")
    print(metrics["table"])
    print(f"wrote {os.path.join(args.out, 'metrics.json')}")
    return 0


def skipped_lines(metrics):
    """Human-readable lines for the skipped samples and annotation notes of a metrics dict."""
    lines = []
    skipped = metrics.get("skipped") or {}
    for category, count in skipped.items():
        if isinstance(count, int) and count and not category.startswith("examples"):
            examples = skipped.get(f"{category}_examples")
            shown = ""
            if isinstance(examples, dict):
                shown = "; ".join(f"{name}: {reason}" for name, reason in list(examples.items())[:3])
            elif isinstance(examples, list):
                shown = ", ".join(examples[:3])
            lines.append(f"skipped {count} ({category.replace('_', ' ')})" + (f", e.g. {shown}" if shown else ""))
    annotations = metrics.get("annotations") or {}
    if annotations.get("degenerate_boxes"):
        lines.append(f"note: {annotations['degenerate_boxes']} annotated boxes cover no pixel at 224 x 224 "
                     "(scored as the official evaluator scores them)")
    if annotations.get("records_with_empty_ground_truth"):
        names = ", ".join(annotations.get("records_with_empty_ground_truth_examples", [])[:3])
        lines.append(f"note: {annotations['records_with_empty_ground_truth']} records have an empty ground truth "
                     f"(cIoU 0, as officially scored), e.g. {names}")
    return lines


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
    except Exception as err:  # noqa: BLE001 - Keras raises several types for mismatched files
        raise CliError(f"{weights_path} does not hold ResNet-18 weights ({err}); re-run `avloc port-weights`.") from err
    return encoder
