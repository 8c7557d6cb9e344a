"""`avloc data sphere`: build the synthetic 360° benchmark (stamps on equirectangular panoramas, ambiX audio)."""

from keras_avloc.cli import ExampleFormatter
from keras_avloc.cli import args as types

EPILOG = """Examples:
  avloc data sphere --out datasets/sphere
  avloc data sphere --out /tmp/tiny_sphere --n-train 4 --n-val 2 --n-test 2 --height 64
  avloc data sphere --out datasets/sphere_dry --no-reflections --no-ambience --classes "cow,dog,duck"

Each scene: a 2:1 panorama of two real background photos with 1-3 photo stamps at known directions (the first
one sounds, slowly drifting), 16 frames at 16 fps (video/<id>.mp4), and 1 s of first-order ambisonics at 24 kHz
(audio/<id>.wav, ambiX W, Y, Z, X) with the exact spherical-harmonic gains of the object's direction, early
reflections and a diffuse ambience. Records list every object's class, mask, box and direction per frame.
Re-running the same command resumes: finished scenes are kept.
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "sphere",
        help="build the synthetic 360° benchmark (equirectangular video + ambiX audio, exact directions)",
        description="Real photo stamps at known directions on equirectangular panoramas of real photos, each "
        "sounding object's real recording encoded into first-order ambisonics; for AVC / AVSA.",
        formatter_class=ExampleFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--out", required=True, help="output dataset root")
    parser.add_argument("--n-train", type=types.integer(0, 1_000_000), default=400, help="training scenes")
    parser.add_argument("--n-val", type=types.integer(0, 1_000_000), default=80, help="validation scenes")
    parser.add_argument("--n-test", type=types.integer(0, 1_000_000), default=160, help="test scenes")
    parser.add_argument("--height", type=types.integer(16, 4096), default=256,
                        help="panorama height in pixels (the width is twice it)")
    parser.add_argument("--seed", type=types.SEED, default=0, help="same seed -> identical dataset")
    parser.add_argument("--classes", default=None, help="comma list of sounding classes (default: all)")
    parser.add_argument("--no-reflections", action="store_true", help="no early reflections")
    parser.add_argument("--no-ambience", action="store_true", help="no diffuse ambience")
    parser.add_argument("--overwrite", action="store_true", help="rebuild an --out folder made with other settings")
    parser.add_argument("--media", default=None, help="folder containing scratch/ (default $KERAS_AVLOC_MEDIA)")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.data.sphere import build_sphere
    from keras_avloc.io.files import check_output_folder

    check_output_folder(args.out)
    summary = build_sphere(
        args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, size=(args.height, 2 * args.height),
        seed=args.seed, classes=[name for name in args.classes.split(",") if name.strip()] if args.classes else None,
        reflections=not args.no_reflections, ambience=not args.no_ambience, overwrite=args.overwrite,
        media_dir=args.media)
    print(f"{summary['built']} scenes built, {summary['skipped']} kept, {summary['seconds']} s; splits "
          + ", ".join(f"{split} {count}" for split, count in summary["splits"].items()))
    print(f"wrote {args.out}")
    return 0
