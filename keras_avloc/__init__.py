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
