"""Benchmark: LVS training steps and `localize` in clips/s, keras-avloc against a PyTorch re-creation of
the official LVS model (`benchmarks/torch_lvs_reference.py`), run in the same process with the same
thread count. Prints a table and the keras/torch ratios (goal: >= 1.2 in fp32 for both modes).

Keras rows:
    train            `model.train_on_batch` of `keras_avloc.models.lvs.LVS` (compiled train step, Adam 1e-4)
    localize         `model.localize` as shipped (one compiled graph per input shape)
    localize-fast    `keras_avloc.perf.fast_inference_model(model).localize` (BN folded, one graph)
The torch model runs channels_last, eval mode and `torch.inference_mode` for localize.

    /work/venv/bin/python benchmarks/bench_train.py                      # batch 16, 224 px, 3 s audio
    /work/venv/bin/python benchmarks/bench_train.py --precision both --steps 3
    /work/venv/bin/python benchmarks/bench_train.py --keras-variants as-built,plain
    /work/venv/bin/python benchmarks/bench_train.py --steps 1 --warmup 0 --batch-size 2 \\
        --image-size 64 --audio-seconds 0.5 --no-torch                   # smoke run
"""

import argparse
import contextlib
import gc
import os
import platform
import sys
import time

import numpy as np

SAMPLE_RATE = 16000
NPERSEG = 512
NOVERLAP = 274


def spectrogram_frames(seconds):
    """Time frames of `keras_avloc.data.audio.lvs_spectrogram` for a clip (3 s -> 200)."""
    samples = int(round(seconds * SAMPLE_RATE))
    if samples < NPERSEG:
        raise SystemExit(f"bench_train.py: --audio-seconds must be at least {NPERSEG / SAMPLE_RATE:.3f} s.")
    return 1 + (samples - NPERSEG) // (NPERSEG - NOVERLAP)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, allocation)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "both"), default="fp32")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads, both frameworks")
    parser.add_argument("--inter-threads", type=int, default=1, help="TensorFlow inter-op threads")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    parser.add_argument("--jit", action="store_true", help="XLA for the Keras train step and fast localize")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--audio-seconds", type=float, default=3.0)
    parser.add_argument("--width", type=int, default=64, help="ResNet base width (64 = ResNet-18)")
    parser.add_argument("--modes", default="train,localize", help="comma list of train, localize")
    parser.add_argument(
        "--keras-variants",
        default="as-built",
        help=f"comma list of {', '.join(VARIANTS)}: the model as shipped, and/or the same ResNet-18 with plain "
        "Keras batch norm and explicit zero padding (what the shipped changes buy)",
    )
    parser.add_argument("--onednn", choices=("default", "on", "off"), default="default", help="TF_ENABLE_ONEDNN_OPTS; default: keras-avloc's default (on unless the variable is already set)")
    args = parser.parse_args(argv)
    if args.batch_size < 2:
        parser.error("--batch-size must be at least 2 (the LVS loss needs negatives)")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    args.modes = [mode.strip() for mode in args.modes.split(",") if mode.strip()]
    unknown = set(args.modes) - {"train", "localize"}
    if unknown:
        parser.error(f"--modes: unknown {sorted(unknown)}; use train and/or localize")
    args.keras_variants = [name.strip() for name in args.keras_variants.split(",") if name.strip()]
    unknown = set(args.keras_variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--keras-variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def load_average():
    try:
        return "/".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def timed(function, steps, warmup):
    """Runs `function` warmup + steps times; returns seconds per timed call."""
    for _ in range(warmup):
        function()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return (time.perf_counter() - start) / steps


VARIANTS = ("as-built", "plain")


@contextlib.contextmanager
def keras_backbone_variant(variant):
    """Builds models inside with the ResNet-18 as shipped ("as-built": fused batch norm, padding="same"
    for stride-1 convs) or as a plain Keras port would be ("plain": `keras.layers.BatchNormalization`
    and an explicit `ZeroPadding2D` before every padded conv), to show what the two changes buy.
    """
    if variant == "as-built":
        yield
        return
    import keras

    from keras_avloc.backbones import resnet

    original_batch_norm, original_conv = resnet._batch_norm, resnet._conv

    def plain_batch_norm(x, name, dtype=None):
        return keras.layers.BatchNormalization(axis=-1, epsilon=resnet.BN_EPSILON, momentum=resnet.BN_MOMENTUM,
                                               name=name, dtype=dtype)(x)

    def explicit_padding_conv(x, filters, kernel_size, stride, padding, name, dtype=None, padding_mode="zeros"):
        if padding:
            x = keras.layers.ZeroPadding2D(padding, name=f"{name}_pad", dtype=dtype)(x)
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            strides=stride,
            padding="valid",
            use_bias=False,
            kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
            name=name,
            dtype=dtype,
        )(x)

    resnet._batch_norm, resnet._conv = plain_batch_norm, explicit_padding_conv
    try:
        yield
    finally:
        resnet._batch_norm, resnet._conv = original_batch_norm, original_conv


def bench_keras(args, precision, variant, images, audio):
    import keras
    import tensorflow as tf

    from keras_avloc.models.lvs import LVS
    from keras_avloc.perf import fast_inference_model

    rows = []
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        with keras_backbone_variant(variant):
            model = LVS(backbone_kwargs={"width": args.width} if args.width != 64 else None)
        label = "keras" if variant == "as-built" else f"keras+{variant}"
        x = {"image": tf.constant(images), "audio": tf.constant(audio)}
        if "train" in args.modes:
            model.compile(optimizer=keras.optimizers.Adam(1e-4), jit_compile=bool(args.jit))
            # Building the Adam slots before the first step saves a second trace of the train
            # function (Keras otherwise creates them inside the traced step and retraces).
            model.optimizer.build(model.trainable_variables)
            seconds = timed(lambda: model.train_on_batch(x), args.steps, args.warmup)
            rows.append((label, precision, "train", seconds))
        if "localize" in args.modes:
            seconds = timed(lambda: model.localize(x["image"], x["audio"]), args.steps, args.warmup)
            rows.append((label, precision, "localize", seconds))
            localizer = fast_inference_model(model, jit_compile=bool(args.jit))
            seconds = timed(lambda: localizer.localize(x["image"], x["audio"]), args.steps, max(args.warmup, 1))
            rows.append((label, precision, "localize-fast", seconds))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
        keras.backend.clear_session()
        gc.collect()
    return rows


def bench_torch(args, precision, images, audio):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_lvs_reference as reference

    rows = []
    model = reference.build(width=args.width)
    image, spectrogram = reference.to_torch_inputs(images, audio)
    if "train" in args.modes:
        step = reference.TrainStep(model, precision=precision)
        rows.append(("torch", precision, "train", timed(lambda: step(image, spectrogram), args.steps, args.warmup)))
    if "localize" in args.modes:
        localizer = reference.Localizer(model, precision=precision)
        rows.append(("torch", precision, "localize", timed(lambda: localizer(image, spectrogram), args.steps, args.warmup)))
    del model
    gc.collect()
    return rows


def print_table(rows, batch_size, flops_per_clip=None, peaks=None):
    """The rows; with `flops_per_clip` (one localisation forward) and `peaks` ({precision: GFLOP/s}), also each
    row's achieved GFLOP/s and its fraction of the matmul peak (a training step counted as 3 forwards)."""
    print()
    extra = f" {'GFLOP/s':>8} {'% peak':>7}" if flops_per_clip and peaks else ""
    print(f"{'framework':<19} {'precision':<9} {'mode':<14} {'clips/s':>9} {'s/step':>8}" + extra)
    for framework, precision, mode, seconds in rows:
        line = f"{framework:<19} {precision:<9} {mode:<14} {batch_size / seconds:>9.2f} {seconds:>8.3f}"
        if extra:
            achieved = batch_size / seconds * flops_per_clip * (3 if mode == "train" else 1) / 1e9
            line += f" {achieved:>8.1f} {achieved / peaks[precision]:>7.0%}"
        print(line)
    torch_rate = {(p, m): batch_size / s for f, p, m, s in rows if f == "torch"}
    ratios = []
    for framework, precision, mode, seconds in rows:
        if framework == "torch":
            continue
        baseline = torch_rate.get((precision, "localize" if mode.startswith("localize") else mode))
        if baseline:
            ratios.append((framework, precision, mode, batch_size / seconds / baseline))
    if ratios:
        print()
        print("ratios keras/torch (clips/s; goal >= 1.20 in fp32)")
        for framework, precision, mode, ratio in ratios:
            print(f"{framework:<19} {precision:<9} {mode:<14} {ratio:>9.2f}x")


def main(argv=None):
    args = parse_args(argv)
    if args.onednn != "default":
        # Set before anything imports TensorFlow (keras_avloc.perf imports keras, hence TensorFlow).
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_avloc.perf import configure_threads, onednn_enabled

    threads = configure_threads(intra=args.threads, inter=args.inter_threads)
    torch_version = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("torch is not installed: PyTorch rows skipped")
            args.no_torch = True
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import torch_lvs_reference as reference

            reference.configure_threads(args.threads)
            torch_version = torch.__version__
    import keras
    import tensorflow as tf

    frames = spectrogram_frames(args.audio_seconds)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    # Log spectrograms / 12 sit around -1; the exact values do not change the speed.
    audio = (rng.standard_normal((args.batch_size, 257, frames, 1)) * 0.3 - 1.0).astype(np.float32)

    onednn = {True: "on", False: "off"}.get(onednn_enabled(), "unknown")
    print(
        f"LVS benchmark: batch {args.batch_size}, image {args.image_size}x{args.image_size}, audio 257x{frames}, "
        f"width {args.width}, steps {args.steps} (+{args.warmup} warmup), XLA {'on' if args.jit else 'off'}"
    )
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, torch {torch_version or '-'}; CPU {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; TF threads intra {threads['intra']} inter {threads['inter']}; "
        f"oneDNN {onednn} "
        f"(TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset')})"
    )
    print(f"load average before: {load_average()}", flush=True)

    precisions = ("fp32", "bf16") if args.precision == "both" else (args.precision,)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_avsa import matmul_peak
    from bench_methods import localize_flops

    from keras_avloc.models.lvs import LVS

    counted = LVS(backbone_kwargs={"width": args.width} if args.width != 64 else None)
    flops_per_clip = localize_flops(counted, {"image": images[:1], "audio": audio[:1]})
    del counted
    keras.backend.clear_session()

    def peaks():
        return {p: matmul_peak(tf.float32 if p == "fp32" else tf.bfloat16) for p in precisions}

    peaks_before = peaks()
    print(f"LVS forward: {flops_per_clip / 1e9:.2f} GFLOP per clip (TensorFlow's profiler); matmul peak before: "
          + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks_before.items()), flush=True)
    rows = []
    for precision in precisions:
        for variant in args.keras_variants:
            rows += bench_keras(args, precision, variant, images, audio)
            print(f"  done: keras {precision} {variant} (load {load_average()})", flush=True)
        if not args.no_torch:
            rows += bench_torch(args, precision, images, audio)
            print(f"  done: torch {precision} (load {load_average()})", flush=True)
    peaks_after = peaks()
    print("matmul peak after: " + ", ".join(f"{p} {v:.0f} GFLOP/s" for p, v in peaks_after.items()))
    best = {p: max(peaks_before[p], peaks_after[p]) for p in precisions}
    print_table(rows, args.batch_size, flops_per_clip, best)
    print(f"\nload average after: {load_average()}")
    return rows


if __name__ == "__main__":
    main()
