"""`avloc train`: train any registered method with model.fit (resumable; checkpoints, CSV and TensorBoard logs)."""

import argparse
import json
import os

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types

EPILOG = """Examples:
  avloc train --method lvs --data datasets/stamps --epochs 20 --batch-size 16 --out runs/lvs
  avloc train --method ezvsl --data datasets/vggss --val-split test --out runs/ezvsl \\
      --init-image-weights resnet18_imagenet.weights.h5 --precision fp32
  avloc train --method avgn --data datasets/stamps --val-split val --out runs/avgn   # random 2-source mixtures
  # small datasets: decode once into memory, augment in graph (the demo's setting)
  avloc train --method lvs --data datasets/stamps-demo --out runs/lvs --width 16 --image-size 160 --cache \
      --augment '{"time_shift": 0.5, "gain_db": 6, "noise_probability": 0.5, "speed": 0.1}' \
      --init-image-weights datasets/stamps-demo/standin/resnet18_w16.weights.h5
  # CSOL: stage one on solo scenes (clusters after each epoch), then stage two on mosaics from it
  avloc train --method csol --data datasets/stamps --out runs/csol1 --epochs 15 --clusters 11
  avloc train --method csol --stage 2 --init-from runs/csol1/model.keras --data datasets/stamps \
      --split train_mosaic --out runs/csol2 --epochs 5
  # IEr: stage one (CSOL's plus the audio instance identifier), then the cross-modal referrer on mosaics
  avloc train --method ier --data datasets/stamps --out runs/ier1 --epochs 15 --clusters 11
  avloc train --method ier --stage 2 --init-from runs/ier1/model.keras --data datasets/stamps --out runs/ier2 \
      --epochs 5 --model-options '{"mask_variant": "image_max"}'
  # DenseAV: sound and speech pairs (train+train_speech by default; build them with `avloc data stamps
  # --n-train-speech ...`), two heads, 2 s clips
  avloc train --method denseav --data datasets/stamps --out runs/denseav --epochs 8 --lr 3e-4 \
      --model-options '{"pretrain_steps": 0}'       # from-scratch audio: no frozen-featurizer phase
  # AVC on viewpoints of 360° clips (`avloc data sphere`), then AVSA from it (the official curriculum)
  avloc train --method avc --data datasets/sphere --out runs/avc --width 16 --image-size 64 --cache
  avloc train --method avsa --init-from runs/avc/model.keras --data datasets/sphere --out runs/avsa
  # two workers (run on each host with its own task index; --batch-size is the global batch)
  TF_CONFIG='{"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 0}}' \
      avloc train --method ezvsl --data datasets/vggss --tfrecords shards/vggss --out runs/ezvsl --batch-size 256
  # a killed run resumes from its last finished epoch: re-run the same command
  # a run with other settings is refused; --overwrite starts it afresh
  tensorboard --logdir runs/lvs/logs

Writes OUT/model.keras (after every epoch), OUT/training_log.csv, OUT/heatmaps/epoch_NNN.png,
OUT/logs/ (TensorBoard scalars and heatmap images, when tensorboard is installed), OUT/backup/
(resume state) and OUT/train_state.json.
"""


def _method(text):
    from keras_avloc.models.registry import method_names, normalize_name

    if normalize_name(text) not in method_names():
        raise argparse.ArgumentTypeError(f"unknown method {text!r}; choose one of {', '.join(method_names())}")
    return normalize_name(text)


def register(subparsers):
    from keras_avloc.models.registry import method_names

    parser = subparsers.add_parser(
        "train",
        help=f"train a method ({' / '.join(method_names())}) on a dataset folder",
        description="Training with model.fit; re-running the same command resumes (only --epochs may change).",
        formatter_class=ExampleFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--method", required=True, type=_method, metavar="METHOD",
                        help=f"localisation method: {', '.join(method_names())}")
    parser.add_argument("--data", required=True, metavar="ROOT", help="dataset folder (frames/, audio/, <split>.json)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder, e.g. runs/lvs")
    parser.add_argument("--epochs", type=types.integer(1), default=20, help="total epochs (default 20)")
    parser.add_argument("--batch-size", type=types.integer(2), default=16, help="batch size (default 16; at least 2)")
    parser.add_argument("--split", default=None,
                        help="training split name (default train; csol --stage 2: train_mosaic)")
    parser.add_argument("--val-split", default=None, help="validation split evaluated every epoch")
    parser.add_argument("--lr", type=types.number(above=0, maximum=10), default=None,
                        help="Adam learning rate (default 1e-4)")
    parser.add_argument("--image-size", type=types.IMAGE_SIZE, default=None,
                        help="image side (default: the method's, 224; AVC / AVSA: 112-pixel viewpoint crops)")
    parser.add_argument("--clip-seconds", type=types.CLIP_SECONDS, default=None,
                        help="audio clip length (default 3.0; csol: 1.0 as its paper)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto (default): bfloat16 mixed precision where the CPU (AMX / AVX512-BF16) or a GPU computes "
                        "it natively, else float32 (`avloc info` tells); a resumed run keeps its own")
    parser.add_argument("--mixed-precision", choices=["bf16"], default=None, help="same as --precision bf16")
    parser.add_argument("--init-image-weights", default=None, metavar="FILE.weights.h5",
                        help="ResNet-18 weights for the image backbone (from `avloc port-weights`)")
    parser.add_argument("--init-audio-weights", default=None, metavar="FILE.weights.h5",
                        help="weights for the audio network (DenseAV: the speech stand-in from `avloc pretrain-audio`, "
                        "at the same --width)")
    parser.add_argument("--freeze-image-encoder", action="store_true", help="keep the image backbone fixed")
    parser.add_argument("--width", type=types.integer(1, 1024), default=64,
                        help="ResNet-18 base width (AVC / AVSA: the R(2+1)D-18 and audio CNN width); 64 = the papers, "
                        "small values for quick experiments")
    parser.add_argument("--mix-sources", type=int, choices=[0, 2], default=None,
                        help="sources mixed into each training clip (default: 2 for avgn, 0 otherwise)")
    parser.add_argument("--embed-dim", type=types.integer(1, 65536), default=None,
                        help="feature dimension D (default 512)")
    parser.add_argument("--depth", type=types.integer(1, 64), default=None,
                        help="avgn: attention blocks per modality (default 3)")
    parser.add_argument("--stage", type=int, choices=[1, 2], default=1,
                        help="csol / ier: 1 = localisation + clustering (default), 2 = class-aware stage on mixtures")
    parser.add_argument("--init-from", default=None, metavar="MODEL.keras",
                        help="csol / ier --stage 2: the stage-one model.keras it starts from (ier stage one: optionally a "
                        "csol stage one)")
    parser.add_argument("--clusters", type=types.integer(2, 100000), default=None,
                        help="csol / ier: number of clusters K (default 11)")
    parser.add_argument("--model-options", default=None, metavar="JSON",
                        help="more constructor arguments of the method, as a JSON object, e.g. DenseAV's "
                        "'{\"pretrain_steps\": 0, \"num_heads\": 1}' (see the model class's docstring)")
    parser.add_argument("--seed", type=types.SEED, default=None, help="random seed")
    parser.add_argument("--eager", action="store_true",
                        help="run eagerly: no ~30 s graph tracing at start, slower steps (debugging, tiny runs)")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of a progress bar")
    parser.add_argument("--augment", default="official",
                        help="training augmentation: official (the published crop and flip; default), strong, or a "
                        "JSON object of keras_avloc.data.augment.Augmentation fields")
    parser.add_argument("--cache", action="store_true",
                        help="decode the training split once into memory and augment in graph (small datasets)")
    parser.add_argument("--audio-level-db", type=types.number(minimum=-80, maximum=0), default=None, metavar="DBFS",
                        help="scale every clip to this RMS level before the spectrogram, in training and (recorded "
                        "in the model) in evaluate / localize, so maps do not depend on loudness; e.g. -20. "
                        "Default: the files' own levels, as the papers")
    parser.add_argument("--warmup-epochs", type=types.number(minimum=0, maximum=1000), default=0.0,
                        help="linear learning-rate warm-up over this many epochs (default 0)")
    parser.add_argument("--strategy", choices=["auto", "none", "mirrored", "multi-worker"], default="auto",
                        help="tf.distribute strategy: auto (default: multi-worker when TF_CONFIG lists several workers, "
                        "mirrored on several GPUs, else none), mirrored (this host's devices), multi-worker "
                        "(MultiWorkerMirroredStrategy from TF_CONFIG); --batch-size is then the global batch")
    parser.add_argument("--tfrecords", default=None, metavar="DIR",
                        help="read the splits from TFRecord shards (`avloc data to-tfrecord`) in DIR; workers of a "
                        "multi-worker job split them by file")
    parser.add_argument("--data-service", default=None, metavar="grpc://HOST:PORT",
                        help="decode and compute spectrograms on tf.data service workers (`avloc data-service "
                        "dispatcher` / `worker`); needs --tfrecords")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete a previous run in --out (only the files train writes) and start afresh")
    parser.set_defaults(func=run)


def _accepts(model_class, parameter):
    """Whether a method's constructor (or one of its bases') names `parameter`."""
    import inspect

    return any(parameter in inspect.signature(klass.__init__).parameters for klass in model_class.__mro__
               if "__init__" in vars(klass))


def run(args):
    from keras_avloc.io.files import check_output_folder

    if not os.path.isdir(args.data):
        raise CliError(f"--data {args.data}: no such folder; pass a dataset folder (frames/, audio/, <split>.json).")
    check_output_folder(args.out)
    if args.init_image_weights and not os.path.isfile(args.init_image_weights):
        raise CliError(f"--init-image-weights {args.init_image_weights}: no such file; create it with "
                       "`avloc port-weights`.")
    if args.init_audio_weights and not os.path.isfile(args.init_audio_weights):
        raise CliError(f"--init-audio-weights {args.init_audio_weights}: no such file; create it with "
                       "`avloc pretrain-audio`.")
    from keras_avloc.models.registry import get_method_class, method_names

    if args.stage == 2:
        staged = [name for name in method_names() if get_method_class(name).next_stage]
        following = get_method_class(args.method).next_stage
        if not following:
            raise CliError(f"--stage 2 applies to --method {' or '.join(staged)} only (got --method {args.method}); "
                           "drop it.")
        args.method = following
    for flag, value, parameter in (("--depth", args.depth, "depth"), ("--clusters", args.clusters, "num_clusters"),
                                   ("--embed-dim", args.embed_dim, "embed_dim")):
        if value is not None and not _accepts(get_method_class(args.method), parameter):
            takers = [name for name in method_names() if _accepts(get_method_class(name), parameter)]
            raise CliError(f"{flag} applies to --method {' / '.join(takers)} only (got --method {args.method}); "
                           "drop it.")
    if args.tfrecords and not os.path.isdir(args.tfrecords):
        raise CliError(f"--tfrecords {args.tfrecords}: no such folder; write the shards with `avloc data to-tfrecord "
                       f"{args.data} {args.tfrecords} --split train`.")
    if args.data_service and not args.tfrecords:
        raise CliError("--data-service runs the input pipeline on other processes, which needs the pure-graph TFRecord "
                       "reader: add --tfrecords DIR (write it with `avloc data to-tfrecord`).")

    from keras_avloc.data.augment import get_augmentation
    from keras_avloc.training import train

    augment = args.augment
    if augment.strip().startswith("{"):
        try:
            augment = json.loads(augment)
        except ValueError as err:
            raise CliError(f"--augment: not valid JSON ({err}); e.g. --augment '{{\"gain_db\": 6}}'.") from None
    try:
        augment = get_augmentation(augment)
    except (ValueError, TypeError) as err:
        raise CliError(f"--augment: {err}") from None
    sphere = get_method_class(args.method).data_kind == "sphere"
    model_kwargs = {} if args.width == 64 else {"width": args.width} if sphere else {"backbone_kwargs": {"width": args.width}}
    if args.embed_dim is not None:
        model_kwargs["embed_dim"] = args.embed_dim
    if args.depth is not None:
        model_kwargs["depth"] = args.depth
    if args.clusters is not None:
        model_kwargs["num_clusters"] = args.clusters
    if args.model_options:
        model_kwargs.update(_model_options(args.method, args.model_options))
    _, history = train(
        args.method, args.data, args.out, epochs=args.epochs, batch_size=args.batch_size, split=args.split,
        val_split=args.val_split, learning_rate=args.lr, image_size=args.image_size,
        clip_seconds=args.clip_seconds, mixed_precision=_precision(args),
        init_image_weights=args.init_image_weights, freeze_image_encoder=args.freeze_image_encoder,
        model_kwargs=model_kwargs, seed=args.seed, verbose=2 if args.quiet else "auto",
        run_eagerly=args.eager, mix_sources=args.mix_sources, overwrite=args.overwrite, augment=augment,
        cache=args.cache, warmup_epochs=args.warmup_epochs, init_from=args.init_from, strategy=args.strategy,
        tfrecord_dir=args.tfrecords, data_service=args.data_service, audio_level_db=args.audio_level_db,
        init_audio_weights=args.init_audio_weights,
    )
    from keras_avloc.training.distribute import cluster_spec

    if history is not None and cluster_spec()[1] == 0:  # the chief writes the run folder
        print(f"saved {os.path.join(args.out, 'model.keras')}")
    return 0


def _precision(args):
    if args.mixed_precision and args.precision not in ("auto", "bf16"):
        raise CliError(f"--mixed-precision bf16 and --precision {args.precision} disagree; pass one of them.")
    if args.mixed_precision:
        return "bf16"
    return None if args.precision == "fp32" else args.precision


def _model_options(method, text):
    """The --model-options JSON object, checked against the method's constructor arguments."""
    import inspect

    from keras_avloc.models.registry import get_method_class

    try:
        options = json.loads(text)
    except ValueError as err:
        raise CliError(f"--model-options: not valid JSON ({err}); e.g. --model-options '{{\"pretrain_steps\": 0}}'.") from None
    if not isinstance(options, dict):
        raise CliError(f"--model-options must be a JSON object of constructor arguments, got {text!r:.60}.")
    model_class = get_method_class(method)
    from keras_avloc.models.base import AVLocModel

    known = {name for cls in model_class.__mro__ if isinstance(cls, type) and issubclass(cls, AVLocModel)
             and "__init__" in vars(cls) for name in inspect.signature(vars(cls)["__init__"]).parameters}
    known = (known | {"dtype"}) - {"self", "args", "kwargs", "name"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise CliError(f"--model-options: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not an argument of "
                       f"{model_class.__name__}; choose from {', '.join(sorted(known))}.")
    return options
