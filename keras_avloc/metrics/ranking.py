"""Ranking metrics shared by several protocols: average precision and retrieval recall@k."""

import numpy as np


def average_precision(y_true, y_score):
    """Average precision, identical to `sklearn.metrics.average_precision_score` (binary case).

    AP = Σ_n (R_n − R_{n−1}) · P_n over the distinct score thresholds taken in decreasing order, so
    tied scores enter together (no interpolation).

    Args:
        y_true: array [M] of 0/1 (or bool) labels; non-binary values are binarised with > 0.5.
        y_score: array [M] of scores (higher = more positive).

    Returns:
        float AP; 0.0 when there is no positive label (sklearn warns and also gives 0).

    Example:
    >>> average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8333333333333333
    """
    truth = np.asarray(y_true, dtype=np.float64).ravel() > 0.5
    score = np.asarray(y_score, dtype=np.float64).ravel()
    if truth.shape != score.shape:
        raise ValueError(f"y_true has {truth.size} values but y_score has {score.size}.")
    if score.size and not np.all(np.isfinite(score)):
        raise ValueError("y_score contains NaN/inf values; fix the heatmaps before computing AP.")
    positives = int(truth.sum())
    if positives == 0:
        return 0.0
    order = np.argsort(-score, kind="mergesort")
    score_sorted = score[order]
    truth_sorted = truth[order]
    last_of_tie = np.r_[np.nonzero(np.diff(score_sorted))[0], score.size - 1]
    true_pos = np.cumsum(truth_sorted)[last_of_tie].astype(np.float64)
    predicted = (last_of_tie + 1).astype(np.float64)
    precision = true_pos / predicted
    recall = true_pos / positives
    recall_step = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_step * precision))


def retrieval_recall(similarity, ks=(1, 5, 10)):
    """Cross-modal retrieval recall@k in both directions from an [N, N] similarity matrix.

    `similarity[i, j]` scores query i of modality A (e.g. audio clip i) against item j of modality B
    (image j); the correct match of i is j = i. A query's rank is the number of items scored strictly
    higher than its match (ties resolved in the query's favour); recall@k = fraction with rank < k.

    Args:
        similarity: array [N, N].
        ks: cut-offs.

    Returns:
        dict {"a_to_b@k": float, "b_to_a@k": float} for every k.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be a square [N, N] matrix, got {sim.shape}.")
    if not np.all(np.isfinite(sim)):
        raise ValueError("similarity contains NaN/inf values.")
    diagonal = np.diag(sim)
    rank_rows = np.sum(sim > diagonal[:, None], axis=1)
    rank_cols = np.sum(sim > diagonal[None, :], axis=0)
    result = {}
    for k in ks:
        result[f"a_to_b@{k}"] = float(np.mean(rank_rows < k))
        result[f"b_to_a@{k}"] = float(np.mean(rank_cols < k))
    return result
