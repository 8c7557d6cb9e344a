"""Fewer, cheaper garbage collections for the test processes (tests/conftest.py, tests/distributed_steps.py).

The objects of the imported TensorFlow and Keras are frozen out of the collector's scans and it runs less often;
with the tests' large object graphs its full collections cost seconds. AVLOC_TEST_GC=default keeps Python's defaults.
"""

import gc
import os


def fewer_collections():
    """Freezes what is imported so far and raises the collection thresholds (unless AVLOC_TEST_GC=default)."""
    if os.environ.get("AVLOC_TEST_GC") == "default":
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
