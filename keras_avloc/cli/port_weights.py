"""`avloc port-weights`: convert PyTorch weights to Keras: a ResNet-18 state dict to a `.weights.h5`, or
(with `--method`) an official method checkpoint to a complete `.keras` model.

Same arguments and implementation as `tools/port_resnet18.py` (keras_avloc.backbones.porting) for the
backbone case.
"""

import os

from keras_avloc.cli import CliError, ExampleFormatter

METHOD_EXAMPLES = """
  # the official LVS checkpoint as a complete model: evaluate and localize take it directly
  {prog} lvs_vggss.pth.tar runs/lvs_official/model.keras --method lvs
  {prog} ezvsl_vggss/best.pth runs/ezvsl_official/model.keras --method ezvsl   # FNAC's best.pth: --method fnac
  {prog} slavc_vggsound144k/latest.pth runs/slavc_official/model.keras --method slavc
  {prog} ours_sup.pth.tar runs/sslalign_official/model.keras --method sslalign
  avloc evaluate --checkpoint runs/lvs_official/model.keras --data datasets/vggss --protocol vggss --out runs/lvs_official/eval
"""


def register(subparsers):
    # porting.py imports only numpy at module level, so `avloc --help` stays fast.
    from keras_avloc.backbones.porting import PORT_EXAMPLES, add_port_arguments

    parser = subparsers.add_parser(
        "port-weights",
        help="convert PyTorch weights (torchvision ResNet-18, official LVS) to Keras weights or a .keras model",
        description="Convert a PyTorch ResNet-18 state dict (torchvision layout, or the imgnet./audnet. "
        "sub-modules of the official LVS checkpoint) into a .weights.h5 for keras_avloc.backbones.ResNet18; "
        "with --method, convert a method's official checkpoint into a complete .keras model (weights plus the "
        "official test settings). Pickles are read with torch.load(weights_only=True); .npz state dicts need "
        "no torch.",
        formatter_class=ExampleFormatter,
        epilog=(PORT_EXAMPLES + METHOD_EXAMPLES).format(prog="avloc port-weights"),
    )
    add_port_arguments(parser)
    parser.add_argument("--method", default=None, metavar="METHOD",
                        help="convert the method's whole official checkpoint into OUTPUT.keras (a complete model); "
                        "the methods and their files: docs/checkpoints.md")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.io.files import check_output_file

    check_output_file(args.output, "OUTPUT")
    if args.method:
        return _port_method(args)
    from keras_avloc.backbones.porting import port_resnet18

    port_resnet18(args.input, args.output, prefix=args.prefix, audio=args.audio, layer4_stride=args.layer4_stride,
                  verify=args.verify)
    return 0


def _port_method(args):
    if not args.output.endswith(".keras"):
        raise CliError(f"OUTPUT {args.output}: with --method the output is a complete model; name it *.keras "
                       "(e.g. runs/lvs_official/model.keras).")
    if args.prefix or args.audio or args.layer4_stride != 2:
        raise CliError("--prefix / --audio / --layer4-stride describe one backbone; with --method the whole "
                       "checkpoint is converted, so drop them.")
    if not os.path.isfile(args.input):
        raise CliError(f"INPUT {args.input}: no such file; pass the official checkpoint (e.g. lvs_vggss.pth.tar).")
    from keras_avloc.io.files import atomic_output
    from keras_avloc.models import get_method_class
    from keras_avloc.models.contract import OfficialCheckpoint

    model_class = get_method_class(args.method)
    if not issubclass(model_class, OfficialCheckpoint):
        raise CliError(f"--method {args.method}: keras-avloc cannot convert an official checkpoint of this method "
                       "(only its backbones: drop --method and pass --prefix for each ResNet-18).")
    model, report = model_class.from_official_checkpoint(args.input)
    for part, part_report in report.items():
        ignored = part_report["ignored"]
        named = sorted(key for key in ignored if not key.endswith("num_batches_tracked"))
        listed = f" ({', '.join(named[:12])}{', ...' if len(named) > 12 else ''})" if named else ""
        print(f"{part}: loaded {part_report['loaded']} tensors; ignored {len(ignored)}{listed}")
        for note in ([part_report["note"]] if part_report.get("note") else []) + list(part_report.get("notes", [])):
            print(f"{part}: {note}")
    with atomic_output(args.output, suffix=".keras") as temporary:
        model.save(temporary)
    print(f"wrote {args.output} ({type(model).__name__}, evaluation settings {model.eval_settings})")
    return 0
