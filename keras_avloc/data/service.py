"""The tf.data service: decoding and spectrograms on other processes or machines (`avloc data-service`).

TensorFlow's own service (https://www.tensorflow.org/api_docs/python/tf/data/experimental/service): one
dispatcher, any number of workers (`avloc data-service dispatcher --port 5050`, `avloc data-service worker
--dispatcher HOST:5050`), and the trainer reads batches from them (`avloc train ... --tfrecords DIR
--data-service grpc://HOST:5050`). Workers run the serialised input graph, so the pipeline must be TensorFlow
ops only: the TFRecord reader of `keras_avloc.data.tfrecord.make_graph_tfrecord_dataset`.

Trainers that give the same `job_name` share one job: each batch goes to one of them (a multi-worker job
then splits the data dynamically, first come first served).
"""

from keras_avloc.io.errors import AvlocError


class DataServiceError(AvlocError, ValueError):
    """A user-fixable problem with the data-service settings (message names the fix)."""


def parse_address(address):
    """"grpc://HOST:PORT" (or "HOST:PORT") -> ("grpc", "HOST:PORT"); raises DataServiceError otherwise."""
    text = str(address).strip()
    protocol, _, target = text.rpartition("://")
    protocol = protocol or "grpc"
    host, _, port = target.rpartition(":")
    if protocol != "grpc" or not host or not port.isdigit():
        raise DataServiceError(f"data service address {address!r}: expected grpc://HOST:PORT, e.g. "
                               "grpc://localhost:5050 (the dispatcher's `avloc data-service dispatcher --port`).")
    return protocol, f"{host}:{port}"


def through_service(dataset, address, job_name):
    """`dataset` read through the tf.data service at `address` (keeps its `records` / `class_list` / `files`).

    Args:
        dataset: a pure-graph `tf.data.Dataset` (see the module docstring).
        address: "grpc://HOST:PORT" of the dispatcher.
        job_name: trainers with the same name share the job's batches.

    Returns:
        The distributed dataset: each epoch, the service workers produce the whole dataset once
        ("distributed_epoch", split dynamically across the workers by shard file).
    """
    import tensorflow as tf

    protocol, target = parse_address(address)
    served = dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC, service=f"{protocol}://{target}",
        job_name=str(job_name)))
    for name in ("records", "class_list", "files"):
        if hasattr(dataset, name):
            setattr(served, name, getattr(dataset, name))
    return served


def start_dispatcher(port, work_dir=None):
    """A `tf.data.experimental.service.DispatchServer` on `port` (0: any free port); returns the server.
    `work_dir` keeps its journal, so a restarted dispatcher recovers its jobs."""
    import tensorflow as tf

    config = tf.data.experimental.service.DispatcherConfig(port=int(port), work_dir=work_dir,
                                                           fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher, port=0, worker_address=None):
    """A `tf.data.experimental.service.WorkerServer` registered with `dispatcher` ("HOST:PORT")."""
    import tensorflow as tf

    _, target = parse_address(dispatcher)
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=target, port=int(port),
                                                       worker_address=worker_address)
    return tf.data.experimental.service.WorkerServer(config)
