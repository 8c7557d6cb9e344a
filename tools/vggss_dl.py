#!/usr/bin/env python
"""Download VGGSound / VGG-SS clips into the keras-avloc dataset layout.

Same as `avloc download` (it runs that command); the implementation lives in keras_avloc/data/download.py.

Usage:
    python tools/vggss_dl.py ANNOTATIONS OUT_ROOT [--url-template T] [--workers N] [--keep-video] [--limit N]
"""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_avloc.cli import main

    sys.exit(main(["download", *sys.argv[1:]]))
