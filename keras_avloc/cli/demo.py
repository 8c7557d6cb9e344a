"""`avloc demo`: build the stamps benchmark and its ImageNet stand-in, train every method, evaluate, report."""

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types


def register(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="build a real-media benchmark and its ImageNet stand-in, train every method, evaluate, write a report",
        formatter_class=ExampleFormatter,
        description="The end-to-end demo. Every step resumes: run it again after Ctrl-C.",
        epilog="Examples:\n  avloc demo\n  avloc demo --methods lvs,ezvsl --ablations\n  avloc demo --preset full --out runs/demo-full\n"
        "  avloc demo --preset tiny --out /tmp/demo --data /tmp/stamps   # a one-minute smoke run\n"
        "  avloc demo --methods avc,avsa   # the 360° demo: AVC, then AVSA from it, on the synthetic 360° benchmark",
    )
    parser.add_argument("--out", default=None, help="output folder (default runs/demo; the 360° demo: runs/demo-sphere)")
    parser.add_argument("--data", default=None, help="where the benchmark is built (default datasets/stamps-demo; the "
                        "360° demo: datasets/sphere-demo)")
    parser.add_argument("--preset", default="default", choices=["default", "full", "tiny"],
                        help="default: 8 classes, 4 to 7 minutes on 2 cores with native bf16 and the data built, "
                        "6.5 to 11.5 from a fresh clone (--methods all: 14 to 17); full: every sounding class, 20 to 32; "
                        "tiny: a smoke run")
    parser.add_argument("--methods", default="default",
                        help="comma-separated registered methods, or 'default' (the methods whose demo recipe is marked "
                        "default: LVS, EZ-VSL and AVGN today) or 'all' (every frame method with a place in the demo); a "
                        "multi-stage method trains the stage the demo scores; 360° methods (AVC, AVSA) run the 360° "
                        "demo")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto: bf16 when the CPU has native bf16 (see `avloc info`), else float32")
    parser.add_argument("--ablations", action="store_true",
                        help="also train every method from scratch (the from-scratch rows of the docs' tables)")
    parser.add_argument("--no-scratch", action="store_true",
                        help="no from-scratch runs (the default; kept for older scripts)")
    parser.add_argument("--epochs", type=types.integer(1, 10000), default=None, help="override the preset's epochs")
    parser.add_argument("--seed", type=types.SEED, default=0)
    parser.add_argument("--workers", type=types.WORKERS, default=None, help="processes for building the data")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.io.files import check_output_folder
    from keras_avloc.models.registry import method_names, normalize_name

    from keras_avloc.demo import all_methods, default_methods

    methods = tuple(normalize_name(m.strip()) for m in args.methods.split(",") if m.strip())
    if methods in (("all",), ("default",)):
        methods = all_methods() if methods == ("all",) else default_methods()
    unknown = sorted(set(methods) - set(method_names()))
    if unknown or not methods:
        raise CliError(f"--methods: unknown {unknown or args.methods!r}; choose from {', '.join(method_names())}.")
    from keras_avloc.models.registry import get_method_class

    spherical = [method for method in methods if get_method_class(method).data_kind == "sphere"]
    if spherical:
        return _run_sphere(args, methods, spherical)
    args.out, args.data = args.out or "runs/demo", args.data or "datasets/stamps-demo"
    check_output_folder(args.out)
    check_output_folder(args.data, "--data")
    from keras_avloc.demo import run_demo

    run_demo(args.out, args.data, preset=args.preset, methods=methods, seed=args.seed, workers=args.workers,
             epochs=args.epochs, precision=None if args.precision == "fp32" else args.precision,
             scratch=True if args.ablations and not args.no_scratch else False)
    return 0


def _run_sphere(args, methods, spherical):
    """The 360° demo (`keras_avloc.demo.sphere`): methods that learn from 360° clips, on their own benchmark."""
    from keras_avloc.demo.sphere import SPHERE_PRESETS, run_sphere_demo
    from keras_avloc.io.files import check_output_folder

    others = [method for method in methods if method not in spherical]
    if others:
        raise CliError(f"--methods: {','.join(spherical)} learn from 360° clips and {','.join(others)} from frames; "
                       "they have separate benchmarks: run `avloc demo --methods "
                       f"{','.join(spherical)}` and `avloc demo --methods {','.join(others)}` apart.")
    if args.preset not in SPHERE_PRESETS or args.ablations:
        raise CliError(f"the 360° demo takes --preset {' or '.join(SPHERE_PRESETS)} and no --ablations (its settings "
                       "and ablations: docs/methods/avsa.md).")
    out, data = args.out or "runs/demo-sphere", args.data or "datasets/sphere-demo"
    check_output_folder(out)
    check_output_folder(data, "--data")
    run_sphere_demo(out, data, methods=spherical, preset=args.preset, seed=args.seed, epochs=args.epochs,
                    precision=None if args.precision == "fp32" else args.precision)
    return 0
