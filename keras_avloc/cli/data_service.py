"""`avloc data-service dispatcher|worker`: run TensorFlow's tf.data service for `avloc train --data-service`."""

import time

from keras_avloc.cli import CliError, ExampleFormatter
from keras_avloc.cli import args as types

EPILOG = """Examples:
  # on the coordinating machine
  avloc data-service dispatcher --port 5050 --work-dir /shared/dispatcher
  # on each CPU machine that decodes (the shards must be readable there too)
  avloc data-service worker --dispatcher coordinator:5050 --port 5051 --worker-address $(hostname):5051
  # the trainer(s)
  avloc train --method ezvsl --data datasets/vggss --tfrecords shards/vggss --data-service grpc://coordinator:5050 \\
      --out runs/ezvsl

Both servers run until they are interrupted (Ctrl-C or SIGTERM).
"""


def register(subparsers):
    parser = subparsers.add_parser("data-service", help="run a tf.data service dispatcher or worker",
                                   description=__doc__.split(":", 1)[1].strip(), formatter_class=ExampleFormatter,
                                   epilog=EPILOG)
    roles = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    dispatcher = roles.add_parser("dispatcher", help="the coordinator: trainers and workers connect to it",
                                  formatter_class=ExampleFormatter, epilog=EPILOG)
    dispatcher.add_argument("--port", type=types.integer(0, 65535), default=5050,
                            help="port to listen on (default 5050; 0 picks a free one)")
    dispatcher.add_argument("--work-dir", default=None, metavar="DIR",
                            help="journal folder: a restarted dispatcher recovers its jobs (fault-tolerant mode)")
    dispatcher.set_defaults(func=run)
    worker = roles.add_parser("worker", help="runs the input pipeline (decoding, spectrograms) for the trainers",
                              formatter_class=ExampleFormatter, epilog=EPILOG)
    worker.add_argument("--dispatcher", required=True, metavar="HOST:PORT", help="the dispatcher's address")
    worker.add_argument("--port", type=types.integer(0, 65535), default=0, help="port to listen on (default: any)")
    worker.add_argument("--worker-address", default=None, metavar="HOST:PORT",
                        help="the address trainers reach this worker at (default localhost:PORT)")
    worker.set_defaults(func=run)


def run(args):
    from keras_avloc.data import service

    try:
        if args.role == "dispatcher":
            server = service.start_dispatcher(args.port, args.work_dir)
            print(f"tf.data service dispatcher listening on {server.target} (pass it to `avloc train "
                  "--data-service`)", flush=True)
        else:
            server = service.start_worker(args.dispatcher, args.port, args.worker_address)
            print(f"tf.data service worker registered with {args.dispatcher}", flush=True)
    except service.DataServiceError as err:
        raise CliError(str(err)) from None
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        if hasattr(server, "stop"):
            server.stop()
    return 0
