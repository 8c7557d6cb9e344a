"""Global-batch helpers for training under `tf.distribute` (MirroredStrategy, MultiWorkerMirroredStrategy).

Every loss here that forms negatives from the other clips of a batch (LVS, EZ-VSL, AVGN, CSOL, IEr, DenseAV,
AVC / AVSA) must see the *global* batch: N replicas with b clips each have to train the objective of one
replica with N*b clips. Inside a step, `global_batch` all-gathers the per-clip tensors the loss reads
(features, labels, masks) along axis 0, in replica order, so every replica computes the loss of the whole
global batch. `tf.distribute.ReplicaContext.all_gather` is differentiable: its gradient is the all-reduced
(summed) upstream gradient sliced to the replica's own rows, so gradients flow back to the local part only.
With the loss divided by the number of replicas (`replica_loss`) and the gradients summed across replicas by
the optimizer, each weight's gradient is that of the single-replica loss on the global batch.

Outside a strategy (or with one replica) both functions return their input unchanged.
"""

from keras import ops


def _replica_context():
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync <= 1:
        return None
    return context


def under_strategy():
    """True inside a replica context of a `tf.distribute` strategy other than the default one (even with a
    single replica: a one-worker MultiWorkerMirroredStrategy runs the same code as N workers)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.get_replica_context() is not None


def replica_count():
    """Replicas in sync in the current replica context (1 outside a strategy)."""
    context = _replica_context()
    return 1 if context is None else int(context.num_replicas_in_sync)


def multi_worker():
    """True inside a step of a `tf.distribute.MultiWorkerMirroredStrategy` spanning more than one worker."""
    if _replica_context() is None:
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    extended = strategy.extended
    in_mode = getattr(extended, "_in_multi_worker_mode", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(in_mode and in_mode())


def global_batch(tree):
    """All-gathers every tensor of a nest (dict / list / tuple; None left as is) along axis 0 across replicas.

    Args:
        tree: per-clip tensors of the local batch, batch first (scalars, i.e. rank-0 tensors, are left alone).

    Returns:
        The same structure with each batched tensor replaced by the concatenation of all replicas' tensors
        (replica 0's rows first); unchanged outside a multi-replica strategy.

    Example:
    >>> features = global_batch({"image_maps": image_maps, "audio_vecs": audio_vecs})  # doctest: +SKIP
    """
    context = _replica_context()
    if context is None:
        return tree
    import tensorflow as tf

    def gather(value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        value = tf.convert_to_tensor(value)
        if value.shape.rank == 0:
            return value
        gathered = context.all_gather(value, axis=0)
        rows = value.shape[0] * context.num_replicas_in_sync if value.shape[0] is not None else None
        gathered.set_shape([rows] + value.shape.as_list()[1:])  # all_gather loses the static shape
        return gathered

    return tf.nest.map_structure(gather, tree)


def replica_loss(loss):
    """The loss a replica differentiates: the global-batch loss divided by the number of replicas (the optimizer
    sums the replicas' gradients)."""
    count = replica_count()
    if count == 1:
        return loss
    return loss * ops.cast(1.0 / count, loss.dtype)
