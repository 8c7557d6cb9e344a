"""Forward-pass speed of the Keras ResNet18 backbone (fp32 and mixed_bfloat16) versus the PyTorch reference.

    python benchmarks/bench_backbone.py [--batch 8] [--size 224] [--layer4-stride 2] [--repeats 5] [--audio]

Prints images/s for each configuration and the ratios Keras-bf16 / Keras-fp32 and Keras-fp32 / torch-fp32
(torch is measured only when it is installed). Numbers depend on the machine and its load; run on an idle machine.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def _time(function, x, repeats, warmup=2):
    for _ in range(warmup):
        function(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bench_keras(policy, shape, layer4_stride, repeats):
    import keras
    import tensorflow as tf

    from keras_avloc.backbones import ResNet18

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = ResNet18(input_channels=shape[-1], layer4_stride=layer4_stride, input_shape=shape[1:])
        forward = tf.function(lambda x: model(x, training=False))
        x = tf.constant(np.random.default_rng(0).standard_normal(shape).astype("float32"))
        return _time(lambda batch: forward(batch).numpy(), x, repeats)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def bench_torch(shape, layer4_stride, repeats):
    try:
        import torch
    except ImportError:
        return None
    from keras_avloc.backbones import torch_reference

    model = torch_reference.TorchResNet18(input_channels=shape[-1], layer4_stride=layer4_stride).eval()
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((shape[0], shape[3], shape[1], shape[2])).astype("float32"))

    def forward(batch):
        with torch.no_grad():
            return model(batch)

    return _time(forward, x, repeats)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="image side (ignored with --audio: 257x200)")
    parser.add_argument("--layer4-stride", type=int, choices=(1, 2), default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--audio", action="store_true", help="1-channel 257x200 spectrogram input")
    args = parser.parse_args(argv)
    shape = (args.batch, 257, 200, 1) if args.audio else (args.batch, args.size, args.size, 3)

    results = {
        "keras fp32": bench_keras("float32", shape, args.layer4_stride, args.repeats),
        "keras mixed_bfloat16": bench_keras("mixed_bfloat16", shape, args.layer4_stride, args.repeats),
        "torch fp32": bench_torch(shape, args.layer4_stride, args.repeats),
    }
    print(f"input {shape}, layer4_stride={args.layer4_stride}, median of {args.repeats} runs")
    for name, seconds in results.items():
        if seconds is None:
            print(f"  {name:22s} not measured (torch not installed)")
        else:
            print(f"  {name:22s} {seconds * 1e3:8.1f} ms/batch  {args.batch / seconds:8.1f} inputs/s")
    print(f"  ratio bf16/fp32 speed   {results['keras fp32'] / results['keras mixed_bfloat16']:.2f}x")
    if results["torch fp32"] is not None:
        print(f"  ratio keras/torch speed {results['torch fp32'] / results['keras fp32']:.2f}x")


if __name__ == "__main__":
    main()
