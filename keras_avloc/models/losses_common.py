"""Small tensor helpers shared by the method losses (backend-agnostic, `keras.ops` only)."""

from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """L2-normalises `x` along `axis` like `torch.nn.functional.normalize` (norm clamped at `epsilon`).

    Args:
        x: tensor.
        axis: axis to normalise.
        epsilon: lower bound on the norm (avoids 0/0 for all-zero features).

    Returns:
        Tensor of the same shape with unit norm along `axis`, computed in float32.
    """
    x = ops.cast(x, "float32")
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, epsilon)


def cross_entropy_with_integer_targets(logits, targets):
    """Mean softmax cross-entropy over the batch (as `torch.nn.functional.cross_entropy`).

    Args:
        logits: float tensor [N, K].
        targets: int tensor [N] with values in [0, K).

    Returns:
        Scalar float32 mean loss.
    """
    log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
    picked = ops.take_along_axis(log_probs, ops.expand_dims(ops.cast(targets, "int32"), -1), axis=-1)
    return -ops.mean(picked)
