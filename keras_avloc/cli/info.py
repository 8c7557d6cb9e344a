"""`avloc info`: versions, CPU features and whether bf16 mixed precision is worth using."""

import importlib
import platform

from keras_avloc import __version__
from keras_avloc.cli import ExampleFormatter
from keras_avloc.perf import CPU_FLAGS, bf16_usable, cpu_flags  # noqa: F401 (re-exported for `avloc info`)

PACKAGES = ["tensorflow", "keras", "numpy", "scipy", "librosa", "soundfile", "cv2", "av", "yt_dlp", "torch"]


def register(subparsers):
    parser = subparsers.add_parser(
        "info",
        help="print versions, CPU features and bf16 support",
        formatter_class=ExampleFormatter,
        epilog="Examples:\n  avloc info\n  avloc info --no-tf   # skip importing TensorFlow",
    )
    parser.add_argument("--no-tf", action="store_true", help="do not import TensorFlow (fast)")
    parser.set_defaults(func=run)


def package_versions(names=PACKAGES):
    versions = {}
    for name in names:
        try:
            module = importlib.import_module(name)
            versions[name] = getattr(module, "__version__", "?")
        except Exception:  # an optional package missing or broken: report, never fail
            versions[name] = None
    return versions


def run(args):
    print(f"keras-avloc {__version__}")
    print(f"python      {platform.python_version()} ({platform.machine()}, {platform.system()})")
    names = [n for n in PACKAGES if not (args.no_tf and n in ("tensorflow", "keras"))]
    for name, version in package_versions(names).items():
        print(f"{name:<11} {version or 'not installed'}")
    flags = cpu_flags()
    print("cpu flags   " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in flags.items()))
    native = bf16_usable()
    print("bf16        " + ("native: avloc train uses bf16 mixed precision by default (--precision fp32 opts out)"
                             if native else "emulated: avloc train uses float32 by default"))
    return 0
