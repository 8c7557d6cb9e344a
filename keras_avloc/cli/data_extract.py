"""`avloc data extract`: middle frames and 16 kHz audio from local videos into the dataset layout."""

from keras_avloc.cli import ExampleFormatter
from keras_avloc.cli import args as types


def register(subparsers):
    parser = subparsers.add_parser(
        "extract",
        help="extract middle frames and 16 kHz mono audio from a folder of videos",
        description="For every VIDEO_DIR/<id>.mp4 write ROOT/frames/<id>.jpg (middle frame) and "
        "ROOT/audio/<id>.wav (16 kHz mono PCM16, whole clip). Resumable: finished clips are skipped; "
        "bad files are counted and listed with the reason in ROOT/skipped.json.",
        formatter_class=ExampleFormatter,
        epilog="Examples:\n  avloc data extract videos/ datasets/mine\n"
        "  avloc data extract videos/ datasets/mine --keep-video --workers 2",
    )
    parser.add_argument("video_dir", metavar="VIDEO_DIR", help="folder with .mp4 (.mkv/.webm/.mov/.avi) files")
    parser.add_argument("root", metavar="ROOT", help="dataset root to write frames/ and audio/ into")
    parser.add_argument("--keep-video", action="store_true", help="also copy each video to ROOT/video/<id>.mp4")
    parser.add_argument("--workers", type=types.WORKERS, default=2, help="parallel extraction threads (default: %(default)s)")
    parser.add_argument("--sample-rate", type=types.SAMPLE_RATE, default=16000,
                        help="audio rate in Hz (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.data.download import extract_videos
    from keras_avloc.io.files import check_output_folder

    check_output_folder(args.root, "ROOT")
    summary = extract_videos(
        args.video_dir, args.root, keep_video=args.keep_video, workers=args.workers,
        sample_rate=args.sample_rate, progress=not args.no_progress,
    )
    print(
        f"done {summary['done']}, skipped {summary['skipped']} (already present), "
        f"bad {summary['bad']} (reasons in {summary['skipped_path']})"
    )
    return 0
