"""`avloc data stamps`: build the real-media composite benchmark (photo stamps on photo backgrounds)."""

from keras_avloc.cli import ExampleFormatter
from keras_avloc.cli import args as types

EPILOG = """Examples:
  avloc data stamps --out datasets/stamps
  avloc data stamps --out datasets/stamps --n-train 5000 --n-test 1000 --workers 2
  avloc data stamps --out /tmp/tiny --n-train 6 --n-val 2 --n-test 4 --n-mix 2 --size 64
  avloc data stamps --out datasets/stamps --speech --ambience
  avloc data stamps --out datasets/stamps --n-train-mosaic 1000 --n-test-mosaic 300 --n-test-duet 300
  avloc data stamps --out datasets/stamps --n-val-interf 140 --n-test-interf 280   # IEr's interferences
  avloc data stamps --out datasets/stamps8 --classes "cello,drum kit,frog,zebra"
  avloc data stamps --out datasets/stamps --n-train-speech 1600 --n-val-speech 160 --speech \
      --n-test-speech-unseen 160                       # DenseAV: sound and speech pairs

Media come from two Debian packages: `sudo apt-get install tuxpaint-stamps-default` and the
scratch backgrounds unpacked by `bash tools/setup.sh` (KERAS_AVLOC_MEDIA overrides their folder).
Re-running the same command resumes: finished scenes are kept.
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "stamps",
        help="build the real-media 'stamps' localisation benchmark",
        description="Pastes real photo cut-outs (Tux Paint stamps) on real background photos (scratch) "
        "and gives each sounding object its own real recording; writes frames/, audio/, masks/ and "
        "train/val/test/test_mix/test_ext(.json) with exact masks and boxes.",
        formatter_class=ExampleFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--out", required=True, help="output dataset root")
    parser.add_argument("--n-train", type=types.integer(0, 1_000_000), default=2000, help="single-source training scenes")
    parser.add_argument("--n-val", type=types.integer(0, 1_000_000), default=200, help="single-source validation scenes")
    parser.add_argument("--n-test", type=types.integer(0, 1_000_000), default=500, help="single-source test scenes")
    parser.add_argument("--n-mix", type=types.integer(0, 1_000_000), default=200, help="two-source test scenes (test_mix.json)")
    parser.add_argument("--n-train-mix", type=types.integer(0, 1_000_000), default=0, help="two-source training scenes")
    parser.add_argument("--n-ext", type=types.integer(0, 1_000_000), default=200,
                        help="extended-protocol scenes with silent/off-screen negatives (test_ext.json)")
    parser.add_argument("--n-val-unseen", type=types.integer(0, 1_000_000), default=0,
                        help="val_unseen.json scenes: val backgrounds and recordings training never hears")
    parser.add_argument("--n-test-unseen", type=types.integer(0, 1_000_000), default=0,
                        help="test_unseen.json scenes: test backgrounds and recordings training never hears")
    parser.add_argument("--n-train-mosaic", type=types.integer(0, 1_000_000), default=0,
                        help="CSOL stage-two training mosaics (train_mosaic.json: 2x2 solo frames, two sound)")
    parser.add_argument("--n-val-mosaic", type=types.integer(0, 1_000_000), default=0, help="val_mosaic.json scenes")
    parser.add_argument("--n-test-mosaic", type=types.integer(0, 1_000_000), default=0, help="test_mosaic.json scenes")
    parser.add_argument("--n-test-duet", type=types.integer(0, 1_000_000), default=0,
                        help="test_duet.json scenes: two sounding objects and 1-2 silent ones in one frame")
    parser.add_argument("--n-val-interf", type=types.integer(0, 1_000_000), default=0,
                        help="val_interf.json: IEr's interference scenes (level differences, off-screen sound, "
                        "silent objects, combined)")
    parser.add_argument("--n-test-interf", type=types.integer(0, 1_000_000), default=0, help="test_interf.json scenes")
    parser.add_argument("--speech", action="store_true", help="also write test_speech.json")
    parser.add_argument("--n-speech", type=types.integer(0, 1_000_000), default=100, help="spoken-prompt scenes with --speech")
    parser.add_argument("--n-train-speech", type=types.integer(0, 1_000_000), default=0,
                        help="train_speech.json: spoken descriptions of one visible object in the seen languages "
                        "and espeak-ng English (DenseAV's speech pairs)")
    parser.add_argument("--n-val-speech", type=types.integer(0, 1_000_000), default=0, help="val_speech.json scenes")
    parser.add_argument("--n-test-speech-unseen", type=types.integer(0, 1_000_000), default=0,
                        help="test_speech_unseen.json: prompts in languages no other split speaks (da, nl, ro)")
    parser.add_argument("--variety", choices=["narrow", "wide"], default="narrow",
                        help="scene distribution of train / val / test: narrow (the first recipe, default) or wide "
                        "(domain-randomised backgrounds, object sizes and counts, levels, partial silence, ambience)")
    parser.add_argument("--n-val-ood", type=types.integer(0, 1_000_000), default=0,
                        help="val_ood.json scenes: a second recipe (other backgrounds, compositing and levels; "
                        "recordings training never hears) for the out-of-generator check")
    parser.add_argument("--n-test-ood", type=types.integer(0, 1_000_000), default=0, help="test_ood.json scenes")
    parser.add_argument("--size", type=types.integer(32, 2048), default=224, help="frame side in pixels")
    parser.add_argument("--seed", type=types.SEED, default=0, help="same seed -> identical dataset")
    parser.add_argument("--workers", type=types.WORKERS, default=1, help="rendering processes")
    parser.add_argument("--ambience", action="store_true", help="add real ambience at 10-20 dB SNR")
    parser.add_argument("--classes", default=None,
                        help="comma list of sounding classes to use (e.g. 'cello,frog,zebra'); others stay "
                        "silent distractors. Default: all")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild an --out folder made with another seed/size")
    parser.add_argument("--media", default=None, help="folder containing scratch/ "
                        "(default $KERAS_AVLOC_MEDIA or ~/.cache/keras-avloc/media)")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.data.stamps import build_stamps, format_summary
    from keras_avloc.io.files import check_output_folder

    check_output_folder(args.out)
    summary = build_stamps(
        args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
        n_test_mix=args.n_mix, n_train_mix=args.n_train_mix, n_test_ext=args.n_ext,
        n_speech=args.n_speech if args.speech else 0, size=args.size, seed=args.seed,
        workers=args.workers, ambience=args.ambience, overwrite=args.overwrite,
        media_dir=args.media, n_val_unseen=args.n_val_unseen, n_test_unseen=args.n_test_unseen,
        n_train_mosaic=args.n_train_mosaic, n_val_mosaic=args.n_val_mosaic, n_test_mosaic=args.n_test_mosaic,
        n_test_duet=args.n_test_duet, n_train_speech=args.n_train_speech, n_val_speech=args.n_val_speech,
        n_test_speech_unseen=args.n_test_speech_unseen, n_val_interf=args.n_val_interf,
        n_test_interf=args.n_test_interf, variety=args.variety, n_val_ood=args.n_val_ood, n_test_ood=args.n_test_ood,
        classes=[name for name in args.classes.split(",") if name.strip()] if args.classes else None)
    print(format_summary(summary))
    print(f"wrote {args.out}")
    return 0
