"""`avloc port-weights`: convert a PyTorch ResNet-18 state dict to a Keras `.weights.h5`.

Same arguments and implementation as `tools/port_resnet18.py` (keras_avloc.backbones.porting).
"""

from keras_avloc.cli import CliError, ExampleFormatter


def register(subparsers):
    # porting.py imports only numpy at module level, so `avloc --help` stays fast.
    from keras_avloc.backbones.porting import PORT_EXAMPLES, add_port_arguments

    parser = subparsers.add_parser(
        "port-weights",
        help="convert a PyTorch ResNet-18 state dict (torchvision / official LVS) to Keras weights",
        description="Convert a PyTorch ResNet-18 state dict (torchvision layout, or the imgnet./audnet. "
        "sub-modules of the official LVS checkpoint) into a .weights.h5 for keras_avloc.backbones.ResNet18. "
        "Pickles are read with torch.load(weights_only=True); .npz state dicts need no torch.",
        formatter_class=ExampleFormatter,
        epilog=PORT_EXAMPLES.format(prog="avloc port-weights"),
    )
    add_port_arguments(parser)
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.backbones.porting import StateDictMismatchError, port_resnet18

    try:
        port_resnet18(
            args.input,
            args.output,
            prefix=args.prefix,
            audio=args.audio,
            layer4_stride=args.layer4_stride,
            verify=args.verify,
        )
    except (FileNotFoundError, ImportError, StateDictMismatchError, ValueError) as err:
        raise CliError(str(err)) from err
    return 0
