"""Input-pipeline throughput: `make_dataset` (LVS front-end, batch 32) vs a plain Python loop.

Generates its own clips in a temporary folder (synthetic frames, 10 s tone + noise audio, and the same clips as
mp4), then measures clips/s for jpg+wav input and for mp4-only input, against a single-threaded loop doing
the usual thing by hand (cv2 decode + resize, librosa load, scipy spectrogram). Prints figures and ratios.

With `--fit`, it measures end-to-end training instead: `model.fit` of LVS (default full width, 224 px, 3 s)
reading the same jpg+wav files (`make_dataset`, training augmentation) and their TFRecord shards
(`--tfrecords` path), against the same model fed one in-memory batch (the synthetic step rate), all in one run
(synthetic first and last, to see drift). The pipeline and the model share the machine's cores.

Usage:
    python benchmarks/bench_pipeline.py [--clips 96] [--seconds 10] [--batch 32]
    python benchmarks/bench_pipeline.py --fit [--width 64] [--image-size 224] [--batch 16] [--steps 8]
                                        [--precision auto]
"""

import argparse
import os
import shutil
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def python_loop(root, records, use_video, clip_seconds=3.0, size=224):
    """The baseline: one clip after another with cv2, librosa and scipy."""
    import cv2
    import librosa
    import scipy.signal

    from keras_avloc.io.imagenet import normalize_images

    for record in records:
        if use_video:
            capture = cv2.VideoCapture(record["video"])
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            capture.set(cv2.CAP_PROP_POS_FRAMES, count // 2)
            _, bgr = capture.read()
            capture.release()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wave, rate = librosa.load(record["video"], sr=16000)
        else:
            bgr = cv2.imread(record["image"])
            wave, rate = librosa.load(record["audio"], sr=16000)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        image = normalize_images(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_CUBIC))
        length = int(rate * clip_seconds)
        start = int(max(len(wave) / rate / 2 - clip_seconds / 2, 0) * rate)
        clip = wave[start:start + length]
        if len(clip) < length:
            clip = np.tile(clip, length // len(clip) + 1)[:length]
        _, _, spec = scipy.signal.spectrogram(clip, rate, nperseg=512, noverlap=274)
        spectrogram = np.log(spec + 1e-7) / 12.0
        assert image.shape == (size, size, 3) and spectrogram.shape == (257, 200)


def time_pipeline(root, split, batch, rounds=2, **kwargs):
    """clips/s of the first pass and the best of `rounds` later passes."""
    from keras_avloc.data import make_dataset

    dataset = make_dataset(root, split, batch_size=batch, **kwargs)
    rates = []
    for _ in range(rounds + 1):
        start, clips = time.perf_counter(), 0
        for x, _ in dataset:
            clips += int(x["image"].shape[0])
        rates.append(clips / (time.perf_counter() - start))
    return rates[0], max(rates[1:])


def time_loop(root, split, use_video, rounds=2):
    """Best clips/s of `rounds` passes of the plain loop (after a two-clip warm-up)."""
    from keras_avloc.data import load_split

    records = load_split(root, split)
    python_loop(root, records[:2], use_video)  # warm-up: imports and first-call costs are not counted
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        python_loop(root, records, use_video)
        rates.append(len(records) / (time.perf_counter() - start))
    return max(rates)


def fit_rate(model, dataset, steps, warmup=2):
    """Training clips/s of `model.fit` over `steps` steps after `warmup` steps."""
    import keras

    times, sizes = [], []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())

    model.fit(dataset, steps_per_epoch=warmup + steps, epochs=1, verbose=0, callbacks=[Clock()])
    for x, _ in dataset.take(1):
        sizes.append(int(x["image"].shape[0]))
    return steps * sizes[0] / (times[-1] - times[warmup - 1])


def fit_rows(args, base):
    """End-to-end `model.fit` on files and TFRecords against the synthetic (in-memory) step rate."""
    from keras_avloc.data import make_dataset
    from keras_avloc.data.synthetic import write_synthetic_dataset
    from keras_avloc.data.tfrecord import write_tfrecords
    from keras_avloc.perf import resolve_precision
    from keras_avloc.training.train import build_training_model

    root, shards = os.path.join(base, "jpg_wav"), os.path.join(base, "shards")
    write_synthetic_dataset(root, count=args.clips, seconds=args.seconds, image_hw=(360, 480))
    write_tfrecords(root, shards, "test", shards=8, progress=False)
    precision = resolve_precision(args.precision)
    import tensorflow as tf

    common = dict(frontend="lvs", image_size=args.image_size, clip_seconds=3.0, batch_size=args.batch,
                  training=True, repeat=True, drop_remainder=True, seed=0)
    files = make_dataset(root, "test", **common)
    records = make_dataset(root, "test", tfrecord_dir=shards, **common)
    first = next(iter(files))
    synthetic = tf.data.Dataset.from_tensors(first).repeat()
    model = build_training_model("lvs", precision, model_kwargs={"backbone_kwargs": {"width": args.width}})
    print(f"LVS width {args.width}, {args.image_size} px, 3 s, batch {args.batch}, "
          f"{precision or 'fp32'}, {args.steps} timed steps; load average {os.getloadavg()[0]:.1f}")
    rates = {}
    for name, dataset in (("synthetic", synthetic), ("jpg+wav files", files), ("TFRecord shards", records),
                          ("synthetic again", synthetic)):
        rates[name] = fit_rate(model, dataset, args.steps)
        print(f"{name:16s} {rates[name]:6.2f} clips/s", flush=True)
    reference = max(rates["synthetic"], rates["synthetic again"])
    for name in ("jpg+wav files", "TFRecord shards"):
        print(f"{name:16s} {rates[name] / reference:6.1%} of the synthetic step rate (the better of the two)")
    print(f"load average after timing: {os.getloadavg()[0]:.1f}")
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--keep", help="write the clips here and keep them (default: a temporary folder)")
    parser.add_argument("--fit", action="store_true", help="end-to-end model.fit against the synthetic step rate")
    parser.add_argument("--width", type=int, default=64, help="--fit: ResNet-18 width (64 = the papers')")
    parser.add_argument("--image-size", type=int, default=224, help="--fit: image side")
    parser.add_argument("--steps", type=int, default=8, help="--fit: timed steps per row")
    parser.add_argument("--precision", default="auto", help="--fit: auto, bf16 or fp32")
    args = parser.parse_args()
    if args.fit:
        base = args.keep or tempfile.mkdtemp(prefix="bench_pipeline_")
        try:
            return fit_rows(args, base)
        finally:
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)

    from keras_avloc.data.synthetic import write_synthetic_dataset

    base = args.keep or tempfile.mkdtemp(prefix="bench_pipeline_")
    jpg_root, mp4_root = os.path.join(base, "jpg_wav"), os.path.join(base, "mp4")
    try:
        start = time.perf_counter()
        write_synthetic_dataset(jpg_root, count=args.clips, seconds=args.seconds, image_hw=(360, 480))
        write_synthetic_dataset(mp4_root, count=args.clips, seconds=args.seconds, image_hw=(360, 480),
                                with_video=True, with_frames=False)
        print(f"generated {args.clips} clips x2 ({args.seconds:.0f} s audio, 480x360 frames) in "
              f"{time.perf_counter() - start:.1f} s; cores: {os.cpu_count()}")
        import tensorflow as tf  # noqa: F401  (imported before timing)

        print(f"load average before timing: {os.getloadavg()[0]:.1f} (the machine may be shared)")
        results = {}
        cases = [("jpg+wav", jpg_root, False, {}), ("jpg+wav cv2", jpg_root, False, {"image_backend": "cv2"}),
                 ("mp4", mp4_root, True, {})]
        loops = {}
        for name, root, use_video, kwargs in cases:
            first, steady = time_pipeline(root, "test", args.batch, **kwargs)
            try:
                if use_video not in loops:
                    loops[use_video] = time_loop(root, "test", use_video)
                loop = loops[use_video]
            except Exception as err:  # librosa may lack an mp4 decoder
                loop = float("nan")
                print(f"  ({name}: python loop failed: {err})")
            results[name] = (first, steady, loop)
            print(f"{name:11s} make_dataset lvs batch {args.batch}: first pass {first:7.1f} clips/s, "
                  f"second pass {steady:7.1f} clips/s | python loop {loop:7.1f} clips/s | "
                  f"ratio {steady / loop:5.2f}x")
        print(f"load average after timing: {os.getloadavg()[0]:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
