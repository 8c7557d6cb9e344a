"""`avloc download`: fetch VGGSound / VGG-SS clips into the dataset layout (resumable).

The implementation is keras_avloc/data/download.py (`tools/vggss_dl.py` runs this same command).
"""

import sys

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types
from keras_avloc.data.download import DEFAULT_FORMAT, DEFAULT_URL_TEMPLATE

DOWNLOAD_EPILOG = """Examples:
  avloc download vggss.json datasets/vggss --workers 4
  avloc download vggss_test.csv datasets/vggss --keep-video --limit 100
  avloc download vggsound.csv datasets/vggsound --url-template 'http://127.0.0.1:8000/{id}.mp4'
  avloc download segments.txt datasets/yt360 --spatial --split train     # YouTube-360 (AVC / AVSA)

Ids are <11-character YouTube id>_<6-digit start>; each clip is the section [start, start+10 s].
Re-run the same command to resume: finished clips are skipped, unavailable ones are listed in
OUT_ROOT/missing.json (use --retry-missing to try those again).

--spatial fetches 360° clips: the equirectangular video (kept as OUT_ROOT/video/<id>.mp4) and the 4-channel
first-order ambisonic track where YouTube offers one (OUT_ROOT/audio/<id>.wav, ambiX at 24 kHz; clips without
it are listed as missing), and writes OUT_ROOT/<--split>.json for `avloc train --method avc|avsa`. The official
YouTube-360 list (AVSpatialAlignment datasets/assets/yt360/segments.txt, "<ytid> <start>,<start>,...") is read
as is; keep the lines of the videos in its train.txt / test.txt for the official splits."""


def add_download_arguments(parser):
    """Adds the downloader's arguments to an argparse parser."""
    parser.add_argument("annotations", metavar="ANNOTATIONS",
                        help="vggss.json, or a CSV/TXT of <ytid>_<start6> ids or VGGSound ytid,start,label,split rows")
    parser.add_argument("out_root", metavar="OUT_ROOT", help="dataset root to write frames/, audio/ (and video/) into")
    parser.add_argument("--url-template", default=DEFAULT_URL_TEMPLATE,
                        help="URL per clip with {ytid} (also {id}, {start}, {end}); default: %(default)s")
    parser.add_argument("--workers", type=types.WORKERS, default=4, help="parallel downloads (default: %(default)s)")
    parser.add_argument("--keep-video", action="store_true", help="also keep OUT_ROOT/video/<id>.mp4")
    parser.add_argument("--spatial", action="store_true",
                        help="360° clips with their 4-channel ambiX track (AVC / AVSA); implies --keep-video")
    parser.add_argument("--split", default="train", help="with --spatial: the split file to write (default train)")
    parser.add_argument("--limit", type=types.integer(1), default=None, help="only the first N ids")
    parser.add_argument("--retries", type=types.integer(0, 100), default=3,
                        help="retries per clip for transient errors (default: 3)")
    parser.add_argument("--backoff", type=types.number(minimum=0, maximum=3600), default=2.0,
                        help="seconds before the first retry, doubling each time (default: %(default)s)")
    parser.add_argument("--retry-missing", action="store_true", help="retry clips already listed as unavailable")
    parser.add_argument("--format", default=DEFAULT_FORMAT, help="yt-dlp format selector (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="download only shard I of N (0-based; e.g. 0/4 .. 3/4 on four machines): a fixed split of "
                        "the ids by hash; its report is OUT_ROOT/missing-I-of-N.json")
    parser.add_argument("--merge-only", action="store_true",
                        help="download nothing: merge the missing-*-of-*.json shard reports in OUT_ROOT (copied there "
                        "from the machines) into OUT_ROOT/missing.json")
    return parser



def register(subparsers):
    parser = subparsers.add_parser(
        "download",
        help="download VGGSound / VGG-SS clips (frames, 16 kHz audio) into a dataset root",
        description="Fetch each clip section [start, start+10 s] with yt-dlp and write\n"
        "OUT_ROOT/frames/<id>.jpg (middle frame), OUT_ROOT/audio/<id>.wav (16 kHz mono PCM16)\n"
        "and, with --keep-video, OUT_ROOT/video/<id>.mp4. Resumable and parallel.",
        formatter_class=ExampleFormatter,
        epilog=DOWNLOAD_EPILOG,
    )
    add_download_arguments(parser)
    parser.set_defaults(func=run)


def run(args, stream=None):
    from keras_avloc.data.download import download_clips
    from keras_avloc.io.files import check_output_folder

    check_output_folder(args.out_root, "OUT_ROOT")
    if args.merge_only:
        import glob
        import os

        from keras_avloc.data.download import merge_reports

        reports = sorted(glob.glob(os.path.join(args.out_root, "missing-*-of-*.json")))
        if not reports:
            raise CliError(f"--merge-only: no missing-I-of-N.json shard reports in {args.out_root}; copy them there "
                           "from the machines that ran `avloc download --shard I/N`.")
        total = merge_reports(reports, os.path.join(args.out_root, "missing.json"))
        print(f"merged {len(reports)} shard reports into {os.path.join(args.out_root, 'missing.json')} "
              f"({total} clips missing)", file=stream or sys.stdout)
        return 0
    shard = None
    if args.shard:
        from keras_avloc.data.download import check_shard

        try:
            shard = check_shard(args.shard)
        except ValueError as err:
            raise CliError(str(err)) from None
    summary = download_clips(
        args.annotations, args.out_root, url_template=args.url_template, workers=args.workers,
        keep_video=args.keep_video, limit=args.limit, retries=args.retries, backoff=args.backoff,
        retry_missing=args.retry_missing, format_selector=args.format, progress=not args.no_progress,
        spatial=args.spatial, split=args.split, shard=shard,
    )
    print(
        f"done {summary['done']}, skipped {summary['skipped']} (already present or known missing), "
        f"missing {summary['missing']}" + (f" ({summary['invalid']} invalid ids)" if summary["invalid"] else "")
        + f"; reasons in {summary['missing_path']}",
        file=stream or sys.stdout,
    )
    if summary.get("split_path"):
        what = ("the downloaded 360° clips; train with --data " if args.spatial else
                "the annotated boxes; evaluate with --data ")
        print(f"wrote {summary['split_path']} ({what}{args.out_root})", file=stream or sys.stdout)
    return 0
