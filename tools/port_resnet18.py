#!/usr/bin/env python
"""Convert a PyTorch ResNet-18 state dict to Keras weights for keras_avloc.backbones.ResNet18.

Usage: python tools/port_resnet18.py IN.pth OUT.weights.h5 [--prefix imgnet.] [--audio]
                                     [--layer4-stride 1|2] [--verify]
The same as `avloc port-weights`; both call keras_avloc.backbones.porting.port_resnet18.
"""

import argparse
import sys


def main(argv=None):
    from keras_avloc.backbones.porting import PORT_EXAMPLES, StateDictMismatchError, add_port_arguments, port_resnet18

    parser = argparse.ArgumentParser(
        prog="port_resnet18.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=PORT_EXAMPLES.format(prog="python tools/port_resnet18.py"),
    )
    add_port_arguments(parser)
    args = parser.parse_args(argv)
    try:
        port_resnet18(
            args.input, args.output, prefix=args.prefix, audio=args.audio,
            layer4_stride=args.layer4_stride, verify=args.verify,
        )
    except (FileNotFoundError, ImportError, StateDictMismatchError, ValueError) as err:
        print(f"port_resnet18.py: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
