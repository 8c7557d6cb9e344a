"""Every frame method's speed in one run: training and localisation clips/s, fp32 and bf16, with each step's
FLOPs as a fraction of this machine's measured matmul peak.

FLOPs are TensorFlow's own count (`tf.compat.v1.profiler`, float operations) of the compiled localisation graph
(one forward pass of both encoders and the map); a training step is taken as 3 x that forward. The profiler
counts convolutions, matmuls and element-wise ops, not `Einsum`, so attention-heavy methods (AVGN, DenseAV) are
undercounted and their fraction of peak is a lower bound. The peak is the best of a few 2048 x 2048 `tf.matmul`
runs in the same precision (`bench_avsa.matmul_peak`), measured before and after the rows (the higher one is
used: on a shared machine it drifts). Inputs are random tensors of each method's own audio
front-end shape (its default clip length) and `--image-size` images; stage-two models run from random weights.

Usage:
    python benchmarks/bench_methods.py [--methods lvs,ezvsl,...] [--width 64] [--image-size 224] [--batch 8]
                                       [--steps 5] [--precision fp32,bf16]
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np

METHODS = ("lvs", "ezvsl", "avgn", "csol", "csolstage2", "ier", "ierstage2", "denseav")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of registered frame methods")
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 base width (64 = the papers')")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after two warm-up steps")
    parser.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 or both")
    return parser.parse_args(argv)


def build(method, width, precision):
    import keras

    from keras_avloc.models import build_model, get_method_class

    keras.utils.set_random_seed(0)
    model_class = get_method_class(method)
    kwargs = {"backbone_kwargs": {"width": width}}
    if model_class.needs_class_names:
        kwargs["class_names"] = [f"class{i}" for i in range(8)]
    if method.startswith(("csol", "ier")):
        kwargs["num_clusters"] = 8
    if precision == "bf16":
        kwargs["dtype"] = "mixed_bfloat16"
    model = build_model(method, **kwargs)
    model.compile()
    return model


def inputs(model, batch, image_size):
    from keras_avloc.data.audio import FRONTENDS, FRONTEND_SAMPLE_RATES

    rng = np.random.default_rng(0)
    seconds = float(getattr(model, "default_clip_seconds", 3.0))
    wave = rng.normal(scale=0.1, size=(batch, int(seconds * FRONTEND_SAMPLE_RATES[model.frontend]))).astype("float32")
    audio = np.asarray(FRONTENDS[model.frontend](wave))
    images = rng.normal(size=(batch, image_size, image_size, 3)).astype("float32")
    labels = {"index": np.arange(batch, dtype="int64"), "label": np.zeros(batch, "int64"),
              "labels": np.zeros((batch, 1), "int64")}
    return {"image": images, "audio": audio}, labels


def localize_flops(model, x):
    """Float operations of one compiled localisation forward (TensorFlow's profiler)."""
    import tensorflow as tf

    size = tuple(x["image"].shape[1:3])
    concrete = tf.function(lambda images, audio: model._localize_maps(images, audio, size)).get_concrete_function(
        tf.TensorSpec(x["image"].shape, tf.float32), tf.TensorSpec(x["audio"].shape, tf.float32))
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=concrete.graph, options=options)
    return float(profile.total_float_ops)


def timed(function, steps):
    for _ in range(2):
        function()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return (time.perf_counter() - start) / steps


def main(argv=None):
    args = parse_args(argv)
    from keras_avloc.perf import bf16_usable

    from bench_avsa import matmul_peak

    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]

    def peaks_now():
        return {p: matmul_peak("float32" if p == "fp32" else "bfloat16") for p in precisions}

    # The peak of a shared 2-core machine drifts between runs: it is measured before and after the rows, and the
    # fractions use the higher of the two.
    first = peaks_now()
    rows = []
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        for precision in precisions:
            model = build(method, args.width, precision)
            x, y = inputs(model, args.batch, args.image_size)
            flops = localize_flops(model, x) / args.batch
            train = timed(lambda: model.train_on_batch(x, y), args.steps)
            localize = timed(lambda: model.localize(x["image"], x["audio"]), args.steps)
            rows.append((method, precision, args.batch / train, args.batch / localize, flops))
            print(f"measured {method} {precision}", flush=True)
    last = peaks_now()
    peaks = {p: max(first[p], last[p]) for p in precisions}
    print("matmul peak (GFLOP/s, before / after): " + ", ".join(f"{p} {first[p]:.0f} / {last[p]:.0f}" for p in precisions)
          + f"; native bf16: {bf16_usable()}; width {args.width}, {args.image_size} px, batch {args.batch}")
    print(f"{'method':<12}{'precision':>10}{'train clips/s':>15}{'% peak':>8}{'localize clips/s':>18}{'% peak':>8}"
          f"{'GFLOP/clip':>12}")
    for method, precision, train_rate, localize_rate, flops in rows:
        peak = peaks[precision] * 1e9
        print(f"{method:<12}{precision:>10}{train_rate:>15.1f}{100 * 3 * flops * train_rate / peak:>8.0f}"
              f"{localize_rate:>18.1f}{100 * flops * localize_rate / peak:>8.0f}{flops / 1e9:>12.2f}")


if __name__ == "__main__":
    main()
