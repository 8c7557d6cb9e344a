"""keras-avloc: self-supervised audio-visual sound-source localisation in Keras 3.

Sub-packages:
    backbones  ResNet-18 encoders (torchvision layout) and PyTorch weight porting.
    data       Dataset layout, annotation parsers, spectrogram front-ends, tf.data pipeline.
    metrics    Localisation metrics (cIoU/AUC, AP, CAP/PIAP, ...) and the Evaluator.
    viz        Heatmap figures and overlay videos.
    models     One module per method (lvs, ezvsl, avgn, ...).
    cli        The `avloc` command.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# TensorFlow's oneDNN kernels trained LVS ~30% faster and localised ~10% faster here (AVX2 CPU, where
# TensorFlow leaves them off by default); measured with benchmarks/bench_train.py --onednn on|off.
# Only a default: set TF_ENABLE_ONEDNN_OPTS=0 to opt out. It can only act before TensorFlow is imported.
if "tensorflow" not in _sys.modules:
    _os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
