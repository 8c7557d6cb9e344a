"""Scaling on tf.distribute, measured on this machine and projected to many workers.

Measured (one run, all traffic on 127.0.0.1): training clips/s of one worker with 2 intra-op threads against two
MultiWorkerMirroredStrategy workers with 1 thread each, at the same global batch (random inputs, each method's
own audio shape), and the bytes one training step moves:
  * all-reduce: the gradients (float32, every trainable weight), summed across workers by the optimizer;
  * all-gather: the per-clip tensors each loss gathers into the global batch (`AVLocModel.global_batch`);
  * batch-norm sync: per batch-norm layer, the channel sums of the forward pass and their gradients.

Projected: step time for N = 8, 64, 256 workers, each with the per-worker batch of the 2-worker run (weak
scaling), from the measured single-worker compute per clip and the message sizes above, with a ring model of the
collectives (TensorFlow's CPU collectives are rings): an all-reduce of G bytes costs 2 (N - 1) alpha +
2 (N - 1) / N G / beta, an all-gather of E bytes per worker (N - 1) (alpha + E / beta). alpha (latency per ring
step) and beta (bandwidth per link) are arguments; the defaults, 30 us and 10 Gbit/s (1.25 GB/s), are those of a
plain datacentre Ethernet, not measured here. Communication is assumed not to overlap compute (an upper bound).

Usage:
    python benchmarks/bench_scale.py [--methods lvs,ezvsl] [--width 64] [--image-size 224] [--batch 16]
                                     [--steps 6] [--alpha-us 30] [--gbit 10]
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

WARMUP = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="lvs,ezvsl")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16, help="global batch (each of two workers gets half)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps after two warm-up steps")
    parser.add_argument("--alpha-us", type=float, default=30.0, help="projection: latency per ring step (us)")
    parser.add_argument("--gbit", type=float, default=10.0, help="projection: link bandwidth (Gbit/s)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: JSON of one worker's job
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------- one worker
def run_worker(job):
    import numpy as np

    from keras_avloc.perf import configure_threads

    configure_threads(intra=job["threads"], inter=1)
    import keras
    import tensorflow as tf

    from keras_avloc.data.audio import FRONTEND_SAMPLE_RATES, get_frontend
    from keras_avloc.layers.normalization import FusedBatchNormalization
    from keras_avloc.models import build_model, get_method_class
    from keras_avloc.training import distribute

    strategy = distribute.make_strategy("multi-worker") if job["workers"] > 1 else None
    method, batch = job["method"], job["batch"]
    model_class = get_method_class(method)
    rng = np.random.default_rng(0)
    wave = 0.1 * rng.normal(size=(batch, int(FRONTEND_SAMPLE_RATES[model_class.frontend]
                                             * model_class.default_clip_seconds))).astype(np.float32)
    x = {"image": rng.normal(size=(batch, job["image_size"], job["image_size"], 3)).astype(np.float32),
         "audio": np.asarray(get_frontend(model_class.frontend)(tf.constant(wave)))}
    y = {"index": np.arange(batch, dtype=np.int32), "label": np.zeros(batch, np.int32)}
    keras.utils.set_random_seed(0)
    with strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope():
        model = build_model(method, backbone_kwargs={"width": job["width"]})
        model.compile()
        gathered = []

        def recording(tree, original=model.global_batch):
            gathered.extend(int(np.prod(t.shape)) * t.dtype.size for t in tf.nest.flatten(tree)
                            if t is not None and hasattr(t, "shape") and len(t.shape) > 0)
            return original(tree)

        object.__setattr__(model, "global_batch", recording)
        dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
        if strategy is not None:
            dataset = distribute.shard_policy(dataset, by_file=False)
        times = []

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, index, logs=None):
                times.append(time.perf_counter())

        model.fit(dataset, steps_per_epoch=WARMUP + job["steps"], epochs=1, verbose=0, callbacks=[Clock()])
    gradient_bytes = sum(int(np.prod(v.shape)) * 4 for v in model.trainable_weights)
    norms = [layer for layer in model._flatten_layers() if isinstance(layer, FusedBatchNormalization)]
    bn_bytes = sum(2 * int(layer.gamma.shape[0]) * 4 * 2 for layer in norms)  # sums + squares, forward + backward
    rate = job["steps"] * batch / (times[-1] - times[WARMUP - 1])
    local = batch // max(1, job["workers"])
    print("RESULT " + json.dumps({
        "clips_per_s": rate, "gradient_bytes": gradient_bytes, "batch_norm_layers": len(norms),
        "batch_norm_bytes": bn_bytes, "gather_bytes_per_clip": sum(gathered) / local if gathered else 0.0,
        "seconds_per_step": (times[-1] - times[WARMUP - 1]) / job["steps"]}), flush=True)


# --------------------------------------------------------------------------------------------- the driver
def launch(job, workers):
    from keras_avloc.training.distribute import loopback_cluster

    configs = loopback_cluster(workers)
    processes = []
    for index in range(workers):
        env = dict(os.environ, PYTHONPATH=ROOT)
        env.pop("TF_CONFIG", None)
        if workers > 1:
            env["TF_CONFIG"] = configs[index]
        processes.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                           json.dumps({**job, "workers": workers})], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for process in processes:
        output, _ = process.communicate(timeout=3600)
        lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
        if process.returncode or not lines:
            raise SystemExit(f"worker failed ({process.returncode}):\n{output[-4000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
    return results[0]


def ring_seconds(workers, gradient_bytes, gather_bytes, bn_layers, bn_bytes, alpha, beta):
    """(all-reduce, all-gather, batch-norm sync) seconds per step for `workers` in the ring model."""
    if workers == 1:
        return 0.0, 0.0, 0.0
    steps = 2 * (workers - 1)
    all_reduce = steps * alpha + steps / workers * gradient_bytes / beta
    all_gather = (workers - 1) * (alpha + gather_bytes / beta)
    # Per batch-norm layer: two all-reduces forward (the sum, then the squared deviations) and two backward.
    norms = 4 * bn_layers * steps * alpha + steps / workers * bn_bytes / beta
    return all_reduce, all_gather, norms


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return
    from keras_avloc.cli.info import bf16_usable, cpu_flags

    flags = cpu_flags()
    print(f"# CPU: {os.cpu_count()} cores, {', '.join(sorted(f for f in flags if f.startswith(('avx512', 'amx'))))[:200]}")
    print(f"# bf16 native: {bf16_usable()}; width {args.width}, {args.image_size} px, global batch {args.batch}, "
          f"{args.steps} timed steps, fp32")
    alpha, beta = args.alpha_us * 1e-6, args.gbit * 1e9 / 8
    print("\n| method | 1 worker x 2 threads (clips/s) | 2 workers x 1 thread (clips/s) | ratio | all-reduce / step "
          "| all-gather / step | batch-norm sync / step |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    measured = {}
    for method in args.methods.split(","):
        job = {"method": method, "width": args.width, "image_size": args.image_size, "batch": args.batch,
               "steps": args.steps}
        one = launch({**job, "threads": 2}, 1)
        two = launch({**job, "threads": 1}, 2)
        measured[method] = (one, two)
        gather_mb = two["gather_bytes_per_clip"] * args.batch / 2 / 1e6
        print(f"| {method} | {one['clips_per_s']:.1f} | {two['clips_per_s']:.1f} | "
              f"{two['clips_per_s'] / one['clips_per_s']:.2f} | {two['gradient_bytes'] / 1e6:.1f} MB | "
              f"{gather_mb:.2f} MB sent per worker | {two['batch_norm_layers']} layers, "
              f"{two['batch_norm_bytes'] / 1e3:.0f} kB |", flush=True)
    print(f"\nProjection (weak scaling, {args.batch // 2} clips per worker; ring collectives, alpha "
          f"{args.alpha_us:g} us, {args.gbit:g} Gbit/s; compute = one 2-thread worker's time per clip; no overlap):")
    print("\n| method | workers | compute (s) | all-reduce (s) | all-gather (s) | batch-norm sync (s) | step (s) | "
          "efficiency |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for method, (one, two) in measured.items():
        local = args.batch // 2
        compute = local / one["clips_per_s"]
        for workers in (8, 64, 256):
            parts = ring_seconds(workers, two["gradient_bytes"], two["gather_bytes_per_clip"] * local,
                                 two["batch_norm_layers"], two["batch_norm_bytes"], alpha, beta)
            step = compute + sum(parts)
            print(f"| {method} | {workers} | {compute:.3f} | {parts[0]:.3f} | {parts[1]:.4f} | {parts[2]:.3f} | "
                  f"{step:.3f} | {compute / step:.0%} |")


if __name__ == "__main__":
    main()
