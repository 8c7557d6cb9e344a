"""Suite-wide hygiene and scheduling.

- Each test module ends by clearing Keras' global session, so the models a module built do not stay reachable
  into the next modules (without a forced full collection: late in a run it cost seconds per module).
- The README runs the suite on two pytest-xdist workers. Tests marked `long` are collected first, so the two
  workers start on them and finish together instead of one waiting for a long test picked up last.
"""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _fresh_keras_session():
    yield
    import keras

    keras.backend.clear_session(free_memory=False)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("long") is None)  # stable: otherwise the collection order


@pytest.fixture(scope="session")
def resnet_fixtures(tmp_path_factory):
    """The folder holding `lvs_w8_checkpoint.npz` (a width-8 checkpoint in the official LVS layout, random weights)
    and `resnet18_w8_outputs.npz` (torch's layer4 outputs on fixed inputs), made by the torch reference once per run
    (`tests/fixtures/make_resnet_fixture.py`)."""
    import importlib.util
    from pathlib import Path

    pytest.importorskip("torch", reason="the porting fixtures are made by torch (pip install -e .[torch])")
    script = Path(__file__).resolve().parent / "fixtures" / "make_resnet_fixture.py"
    spec = importlib.util.spec_from_file_location("make_resnet_fixture", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return Path(module.main(str(tmp_path_factory.mktemp("resnet_fixtures"))))


def pytest_configure(config):
    """Two settings of the test processes (subprocesses keep TensorFlow's and Python's defaults):

    - Grappler's graph rewrites cost more tracing time than they save on the tests' tiny models (the demo turns them
      off for the same reason); AVLOC_TEST_GRAPPLER=1 keeps them on.
    - Python's garbage collector: the objects of the imported TensorFlow and Keras are frozen out of its scans and
      it runs less often; with the tests' large object graphs its full collections cost seconds (one pass of
      test_conformance.py and test_hardening.py: 92 s / 98 s against 99 s / 117 s with the defaults).
      AVLOC_TEST_GC=default keeps the defaults.
    """
    import os

    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # the pytest-xdist controller runs no test
    if os.environ.get("AVLOC_TEST_GRAPPLER") != "1":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    import keras  # noqa: F401 - imported before the freeze, so its objects are frozen too
    from gc_settings import fewer_collections

    fewer_collections()
