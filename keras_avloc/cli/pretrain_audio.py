"""`avloc pretrain-audio`: the speech stand-in (DenseAV's spectrogram CNN taught to tell spoken words apart, from
words that never name a benchmark object), saved as weights that `avloc train --init-audio-weights` loads."""

from keras_avloc.cli import ExampleFormatter
from keras_avloc.cli import args as types

EPILOG = """Examples:
  avloc pretrain-audio --out standin/speech_w16.weights.h5 --width 16
  avloc train --method denseav --data datasets/stamps-speech --out runs/denseav --width 16 --audio-level-db -20 \\
      --init-image-weights standin/resnet18_w16.weights.h5 --init-audio-weights standin/speech_w16.weights.h5 \\
      --model-options '{"pretrain_steps": 0}'   # without it: DenseAV's official 3,000 steps of frozen featurizers

No word of any benchmark class's stamp descriptions (in any language) is spoken, nor a listed other name of those
objects, nor Danish, Dutch or Romanian (the languages only test_speech_unseen speaks). Writes OUT (the weights),
OUT without .weights.h5 plus .json (accuracy on held-out renderings, the words) and a .work/ folder (the spoken
words, resume state). Re-running the same command resumes or does nothing.
"""


def register(subparsers):
    parser = subparsers.add_parser(
        "pretrain-audio",
        help="train the speech stand-in: DenseAV's audio CNN taught to tell spoken words apart",
        description="DenseAV's paper starts its audio featurizer from HuBERT, which cannot be downloaded here. This "
        "trains DenseAV's spectrogram CNN to recognise words from the Debian word lists (English, French, German, "
        "Spanish, Italian, Portuguese) spoken by espeak-ng in many voices, rates and pitches, with noise. It is an "
        "honest stand-in, not HuBERT.",
        formatter_class=ExampleFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--out", required=True, metavar="FILE.weights.h5", help="weights file to write")
    parser.add_argument("--width", type=types.integer(1, 1024), default=64,
                        help="the CNN's base width (the --width of the DenseAV that will load it; default 64)")
    parser.add_argument("--words-per-language", type=types.integer(1, 100000), default=100,
                        help="words drawn from each language's list; each word is a class (default 100)")
    parser.add_argument("--per-word", type=types.integer(1, 1000), default=8,
                        help="training renderings per word (one more is held out; default 8)")
    parser.add_argument("--voices", choices=["espeak", "espeak+flite"], default="espeak",
                        help="espeak (espeak-ng's voices, default) or espeak+flite (English also in CMU Flite's voices)")
    parser.add_argument("--level-db", type=types.number(minimum=-80, maximum=0), default=-20.0,
                        help="gated RMS level of every clip before the log-mel, dBFS (default -20: train DenseAV "
                        "with the same --audio-level-db)")
    types.add_standin_training_arguments(parser, epochs=15, seed_help="words, renderings and training seed")
    parser.set_defaults(func=run)


def run(args):
    from keras_avloc.io.files import check_output_file
    from keras_avloc.training.pretrain import pretrain_audio

    check_output_file(args.out)
    summary = pretrain_audio(args.out, width=args.width, words_per_language=args.words_per_language,
                             per_word=args.per_word, epochs=args.epochs, batch_size=args.batch_size,
                             learning_rate=args.lr, seed=args.seed, mixed_precision=args.mixed_precision,
                             level_db=args.level_db, workers=args.workers, verbose=2 if args.quiet else "auto",
                             voices=args.voices)
    print(f"wrote {args.out}: {summary['words']} words, held-out accuracy {summary['val_accuracy']:.3f}")
    return 0
