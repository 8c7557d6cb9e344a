"""`avloc download`: fetch VGGSound / VGG-SS clips into the dataset layout (resumable).

The implementation is keras_avloc/data/download.py; the arguments live here so that building the
`avloc` parser stays import-light (tools/vggss_dl.py reuses `add_download_arguments`).
"""

from keras_avloc.cli import CliError, ExampleFormatter

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={ytid}"
DEFAULT_FORMAT = "bv*[height<=?480]+ba/b[height<=?480]/bv*+ba/b"

DOWNLOAD_EPILOG = """Examples:
  avloc download vggss.json datasets/vggss --workers 4
  avloc download vggss_test.csv datasets/vggss --keep-video --limit 100
  avloc download vggsound.csv datasets/vggsound --url-template 'http://127.0.0.1:8000/{id}.mp4'

Ids are <11-character YouTube id>_<6-digit start>; each clip is the section [start, start+10 s].
Re-run the same command to resume: finished clips are skipped, unavailable ones are listed in
OUT_ROOT/missing.json (use --retry-missing to try those again)."""


def add_download_arguments(parser):
    """Adds the downloader's arguments to an argparse parser."""
    parser.add_argument("annotations", metavar="ANNOTATIONS",
                        help="vggss.json, or a CSV/TXT of <ytid>_<start6> ids or VGGSound ytid,start,label,split rows")
    parser.add_argument("out_root", metavar="OUT_ROOT", help="dataset root to write frames/, audio/ (and video/) into")
    parser.add_argument("--url-template", default=DEFAULT_URL_TEMPLATE,
                        help="URL per clip with {ytid} (also {id}, {start}, {end}); default: %(default)s")
    parser.add_argument("--workers", type=int, default=4, help="parallel downloads (default: %(default)s)")
    parser.add_argument("--keep-video", action="store_true", help="also keep OUT_ROOT/video/<id>.mp4")
    parser.add_argument("--limit", type=int, default=None, help="only the first N ids")
    parser.add_argument("--retries", type=int, default=3, help="retries per clip for transient errors (default: 3)")
    parser.add_argument("--backoff", type=float, default=2.0,
                        help="seconds before the first retry, doubling each time (default: %(default)s)")
    parser.add_argument("--retry-missing", action="store_true", help="retry clips already listed as unavailable")
    parser.add_argument("--format", default=DEFAULT_FORMAT, help="yt-dlp format selector (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def run(args):
    from keras_avloc.data.download import AnnotationError, run_download

    try:
        run_download(args)
    except AnnotationError as err:
        raise CliError(str(err)) from err
    return 0
