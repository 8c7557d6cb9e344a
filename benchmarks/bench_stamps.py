"""Benchmark: build speed of the "stamps" benchmark (`avloc data stamps`) at 224 px.

Builds the same scenes with 1 and with N worker processes into temporary folders (cold start:
media decoding included), prints scenes/s for each and the speed-up, then re-runs the last build to
time the resume path (everything skipped).

    /work/venv/bin/python benchmarks/bench_stamps.py [--scenes 300] [--workers 2] [--size 224]
"""

import argparse
import shutil
import tempfile
import time

from keras_avloc.data.stamps import build_stamps


def _build(root, scenes, workers, size):
    n_mix = scenes // 10
    started = time.perf_counter()
    summary = build_stamps(root, n_train=scenes - 2 * n_mix, n_val=0, n_test=0, n_test_mix=n_mix,
                           n_test_ext=n_mix, size=size, seed=0, workers=workers, progress=False)
    return time.perf_counter() - started, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench_stamps_")
    try:
        rates = {}
        for workers in sorted({1, args.workers}):
            seconds, summary = _build(f"{work}/w{workers}", args.scenes, workers, args.size)
            rates[workers] = summary["built"] / seconds
            print(f"workers={workers}: {summary['built']} scenes in {seconds:.1f} s "
                  f"= {rates[workers]:.1f} scenes/s")
        if args.workers != 1:
            print(f"speed-up with {args.workers} workers: {rates[args.workers] / rates[1]:.2f}x")
        seconds, summary = _build(f"{work}/w{args.workers}", args.scenes, args.workers, args.size)
        print(f"resume (all {summary['skipped']} scenes done): {seconds:.2f} s")
        print(f"projected time for 3000 scenes with {args.workers} workers: "
              f"{3000 / rates[args.workers] / 60:.1f} min")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
