"""Suite-wide hygiene: each test module ends by clearing Keras' global session and collecting the heap, so the
models a module built do not stay reachable into the next modules."""

import gc

import pytest


@pytest.fixture(autouse=True, scope="module")
def _fresh_keras_session():
    yield
    import keras

    keras.backend.clear_session()
    gc.collect()
