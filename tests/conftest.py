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
