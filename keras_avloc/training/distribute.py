"""`tf.distribute` strategies for `train(..., strategy=...)` / `avloc train --strategy ...`.

TensorFlow's own engine does the work: `tf.distribute.MirroredStrategy` on one host with several devices,
`tf.distribute.MultiWorkerMirroredStrategy` across processes or hosts, configured by `TF_CONFIG` exactly as
TensorFlow defines it (https://www.tensorflow.org/guide/distributed_training#TF_CONFIG):

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'

What the toolkit adds on top (all in the shared plumbing, so every registered method gets it):
* the loss of every method sees the *global* batch (`keras_avloc.layers.replicas.global_batch`), and the
  ResNet batch norms normalise with global-batch statistics, so N workers with batch b train the objective
  of one worker with batch N*b (`--batch-size` is the global batch, as in `tf.distribute`);
* worker 0 (the chief) writes the run folder; every other worker writes its copies (backup, logs) under
  `OUT/.workers/worker-I/`, so nothing is written twice to one file;
* `keras.callbacks.BackupAndRestore` on every worker: killing a worker and restarting the job (all workers,
  as a cluster manager does) resumes from the last finished epoch;
* datasets are split across workers by `tf.data` auto-sharding: by file for TFRecord shards (policy FILE),
  by element otherwise (policy DATA; every worker then shuffles with the same seed).
"""

import json
import os

from keras_avloc.io.errors import AvlocError

STRATEGIES = ("auto", "none", "mirrored", "multi-worker")
"""Names accepted by `make_strategy` (and `avloc train --strategy`)."""

DEFAULT_MULTI_WORKER_SEED = 0
"""The shuffling seed every worker uses when a multi-worker run is given none (they must shuffle alike)."""


class DistributeError(AvlocError, ValueError):
    """A user-fixable problem with the distribution settings (message names the fix)."""


def cluster_spec():
    """(workers [host:port], task index) from `TF_CONFIG`, or ([], 0) when it is unset.

    Raises:
        DistributeError: `TF_CONFIG` is not valid JSON or lacks the cluster / task fields.
    """
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return [], 0
    try:
        config = json.loads(text)
        workers = list(config.get("cluster", {}).get("worker", []))
        chief = list(config.get("cluster", {}).get("chief", []))
        task = config.get("task", {})
        task_type, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as err:
        raise DistributeError(
            f"TF_CONFIG is not valid ({err}); expected e.g. '{{\"cluster\": {{\"worker\": [\"host1:12345\", "
            f"\"host2:12345\"]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}}'.") from None
    if not workers and not chief:
        raise DistributeError("TF_CONFIG has no cluster.worker list; list every worker's host:port there.")
    if task_type not in ("worker", "chief"):
        raise DistributeError(f"TF_CONFIG task type {task_type!r} is not supported; MultiWorkerMirroredStrategy "
                              "runs 'worker' (and optionally one 'chief') tasks.")
    hosts = chief + workers
    position = index + (len(chief) if task_type == "worker" else 0)
    if not 0 <= position < len(hosts):
        raise DistributeError(f"TF_CONFIG task index {index} is outside its cluster of {len(hosts)} workers.")
    return hosts, position


def loopback_cluster(workers):
    """`TF_CONFIG` values (JSON strings, one per task index) for a cluster of `workers` processes on 127.0.0.1, on
    ports free at the time of the call: to try multi-worker training on one machine.

    Example:
    >>> configs = loopback_cluster(2)  # start process I with TF_CONFIG=configs[I]  # doctest: +SKIP
    """
    import socket

    sockets = [socket.socket() for _ in range(int(workers))]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    hosts = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    for sock in sockets:
        sock.close()
    return [json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})
            for index in range(len(hosts))]


def make_strategy(name="auto"):
    """The `tf.distribute.Strategy` for `name`, or None to train on the default (single-device) strategy.

    Args:
        name: "auto" (multi-worker when `TF_CONFIG` lists more than one worker, mirrored when the host has more
            than one GPU, else None), "none", "mirrored" (`MirroredStrategy` over the host's devices) or
            "multi-worker" (`MultiWorkerMirroredStrategy` from `TF_CONFIG`; one worker without it), or a
            `tf.distribute.Strategy` (returned as is).

    Returns:
        A strategy or None. Create it before any other TensorFlow work in the process: TensorFlow configures
        the collective ops of a multi-worker strategy at start-up.

    Example:
    >>> strategy = make_strategy("auto")  # doctest: +SKIP
    """
    import tensorflow as tf

    if isinstance(name, tf.distribute.Strategy):
        return name
    if name not in STRATEGIES:
        raise DistributeError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    if name == "none":
        return None
    if name == "auto":
        hosts, _ = cluster_spec()
        if len(hosts) > 1:
            name = "multi-worker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    cluster_spec()  # validates TF_CONFIG before TensorFlow reads it
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise DistributeError(f"MultiWorkerMirroredStrategy could not start ({err}); create it before any other "
                              "TensorFlow work in the process (avloc train does).") from None


def worker_role(strategy):
    """(task index, number of workers) of this process under `strategy` ((0, 1) for single-process ones)."""
    if strategy is None:
        return 0, 1
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return 0, 1
    spec = resolver.cluster_spec().as_dict()
    workers = sum(len(tasks) for kind, tasks in spec.items() if kind in ("worker", "chief"))
    if workers <= 1:
        return 0, 1
    index = int(resolver.task_id or 0)
    if resolver.task_type == "worker" and "chief" in spec:
        index += len(spec["chief"])
    return index, workers


def worker_dir(out_dir, strategy):
    """Where this worker writes: `out_dir` for the chief (and single-process runs), else
    `out_dir/.workers/worker-I`."""
    index, workers = worker_role(strategy)
    if index == 0:
        return out_dir
    return os.path.join(out_dir, ".workers", f"worker-{index}")


def shard_policy(dataset, by_file):
    """`dataset` with its `tf.data` auto-shard policy set: FILE (each worker reads its own TFRecord files) when
    `by_file`, else DATA (each worker keeps its share of the elements)."""
    import tensorflow as tf

    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    options.experimental_distribute.auto_shard_policy = policy.FILE if by_file else policy.DATA
    shaped = dataset.with_options(options)
    for name in ("records", "class_list", "skipped"):
        if hasattr(dataset, name):
            try:
                setattr(shaped, name, getattr(dataset, name))
            except AttributeError:
                pass
    return shaped
