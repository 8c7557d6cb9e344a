"""Benchmark: cIoU/AUC for a VGG-SS-sized evaluation (5,158 maps at 224×224) with the vectorised metrics.

Prints the wall time of `keras_avloc.metrics.ciou` on (a) 7×7 maps upsampled to 224 and (b) maps saved
at 224×224, the Evaluator end to end, and the ratio against a per-sample loop written like the
official evaluator (measured on a subset and extrapolated).

    /work/venv/bin/python benchmarks/bench_metrics.py [--count 5158]
"""

import argparse
import time

import numpy as np

from keras_avloc.metrics import Evaluator, box_gt_map, ciou, resize_maps, success_auc


def official_style_ciou(heatmap, gt_map):
    """One sample the way the official scripts do it (sort, threshold, three sums)."""
    value = heatmap
    if value.max() != value.min():
        value = (value - value.min()) / (value.max() - value.min())
    threshold = np.sort(value.flatten())[int(value.shape[0] * value.shape[1] * 0.5)]
    infer = np.zeros((224, 224))
    infer[value >= threshold] = 1
    return np.sum(infer * gt_map) / (np.sum(gt_map) + np.sum(infer * (gt_map == 0)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5158)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 1, size=(args.count, 4))
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    gt = np.stack([box_gt_map([box]) for box in boxes])
    small = rng.random((args.count, 7, 7)).astype(np.float32)

    start, cpu = time.perf_counter(), time.process_time()
    values = ciou(small, gt)
    success_auc(values)
    t_small = time.perf_counter() - start
    print(f"ciou + success_auc, {args.count} maps 7x7 -> 224: {t_small:.2f} s wall, "
          f"{time.process_time() - cpu:.2f} s CPU")

    full = resize_maps(small).astype(np.float32)
    start, cpu = time.perf_counter(), time.process_time()
    values_full = ciou(full, gt)
    t_full = time.perf_counter() - start
    print(f"ciou, {args.count} maps already 224x224: {t_full:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")

    evaluator = Evaluator("vggss")
    start = time.perf_counter()
    for begin in range(0, args.count, 64):
        evaluator.update(small[begin : begin + 64], gt[begin : begin + 64])
    result = evaluator.result()
    t_eval = time.perf_counter() - start
    print(f"Evaluator (ciou, pointing game, confidence), {args.count} maps in batches of 64: {t_eval:.2f} s")

    subset = min(500, args.count)
    start = time.perf_counter()
    loop = np.array([official_style_ciou(full[i].astype(np.float64), gt[i]) for i in range(subset)])
    t_loop = (time.perf_counter() - start) * args.count / subset
    print(f"official-style per-sample loop (extrapolated from {subset}): {t_loop:.2f} s")
    print(f"speed-up vs loop: {t_loop / t_full:.1f}x; max |difference| on the subset: "
          f"{np.abs(loop - values_full[:subset]).max():.2e}; cIoU@0.5={result['ciou@0.5']:.4f} AUC={result['auc']:.4f}")


if __name__ == "__main__":
    main()
