import sys

from keras_avloc.cli import main

sys.exit(main())
