"""AVC / AVSA speed: the viewpoint pipeline's clips/s and the training step, fp32 and bf16, as a fraction of
this machine's measured matmul peak.

The matmul peak is the best of a few 2048 x 2048 float32 / bfloat16 `tf.matmul` runs. A step's FLOPs are counted
from the networks' convolution and dense layers (2 x outputs x kernel x input channels, forward; a training
step is taken as 3 x forward), with every layer's output shape measured on the benchmark's inputs.

Usage:
    python benchmarks/bench_avsa.py [--width 16] [--crop 64] [--batch 16] [--steps 10] [--data DIR]

`--data` (an `avloc data sphere` folder) also measures the viewpoint pipeline on its val split.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np


def matmul_peak(dtype, size=2048, repeats=10):
    """Best GFLOP/s of `repeats` size x size matmuls."""
    import tensorflow as tf

    a = tf.random.normal([size, size], dtype=tf.float32)
    a = tf.cast(a, dtype)
    run = tf.function(lambda x: tf.matmul(x, x))
    run(a).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def forward_flops(network, inputs):
    """Forward FLOPs of the Conv / Dense layers of a functional Keras model on `inputs`."""
    import keras

    layers = [layer for layer in network.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D,
                                                                       keras.layers.Dense))]
    probe = keras.Model(network.inputs, [layer.output for layer in layers])
    outputs = probe([inputs])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    total = 0.0
    for layer, out in zip(layers, outputs):
        kernel = layer.kernel.shape
        total += 2.0 * float(np.prod(out.shape)) * float(np.prod(kernel[:-1]))
    return total


def step_seconds(method, width, crop, batch, steps, precision):
    import keras
    import tensorflow as tf

    from keras_avloc.models.avsa import AVC, AVSA

    keras.utils.set_random_seed(0)
    model_class = AVSA if method == "avsa" else AVC
    views = model_class.viewpoints_per_clip
    model = model_class(width=width, crop_size=crop, dtype="mixed_bfloat16" if precision == "bf16" else "float32")
    model.compile()
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(batch, views, 8, crop, crop, 3)).astype(np.float32),
         "audio": rng.normal(size=(batch, views, 101, 128, 4)).astype(np.float32)}
    data = tf.data.Dataset.from_tensors((x, {"rotated": np.zeros(batch, np.float32)})).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = (time.perf_counter() - start) / steps
    flops = 3.0 * (forward_flops(model.video_encoder, x["image"].reshape((-1,) + x["image"].shape[2:]))
                   + forward_flops(model.audio_encoder, x["audio"].reshape((-1,) + x["audio"].shape[2:])))
    return seconds, flops


def pipeline_clips_per_second(root, viewpoints, crop, batch):
    from keras_avloc.data.sphere_dataset import make_sphere_dataset

    rates = {}
    for training in (True, False):
        dataset = make_sphere_dataset(root, "val", training=training, batch_size=batch, viewpoints=viewpoints,
                                      crop_size=crop)
        start, count = time.perf_counter(), 0
        for _, y in dataset:
            count += len(y["index"])
        rates["train" if training else "eval"] = count / (time.perf_counter() - start)
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--data", default=None)
    args = parser.parse_args()

    import tensorflow as tf

    from keras_avloc.perf import bf16_usable

    peaks = {"fp32": matmul_peak(tf.float32), "bf16": matmul_peak(tf.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s "
          f"(native bf16: {bf16_usable()})")
    for method in ("avc", "avsa"):
        times = {}
        for precision in ("fp32", "bf16"):
            seconds, flops = step_seconds(method, args.width, args.crop, args.batch, args.steps, precision)
            times[precision] = seconds
            achieved = flops / seconds / 1e9
            print(f"{method} width {args.width}, {args.crop}-px crops, batch {args.batch}, {precision}: "
                  f"{seconds:.3f} s/step, {args.batch / seconds:.1f} clips/s, {achieved:.0f} GFLOP/s = "
                  f"{achieved / peaks[precision]:.1%} of the {precision} matmul peak")
        print(f"{method}: bf16 is {times['fp32'] / times['bf16']:.2f}x fp32")
    if args.data:
        for method, views in (("avc", 1), ("avsa", 4)):
            rates = pipeline_clips_per_second(args.data, views, args.crop, args.batch)
            print(f"pipeline ({method}, {views} viewpoint(s)): {rates['train']:.1f} clips/s training, "
                  f"{rates['eval']:.1f} clips/s evaluation")


if __name__ == "__main__":
    main()
