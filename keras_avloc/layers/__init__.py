"""Keras layers shared by the models: fused batch normalisation and the AVGN transformer/grouping blocks."""

from keras_avloc.layers.grouping import GroupAssignment, GroupingEncoder
from keras_avloc.layers.normalization import FusedBatchNormalization
from keras_avloc.layers.padding import ReflectPadding2D

__all__ = ["FusedBatchNormalization", "GroupAssignment", "GroupingEncoder", "ReflectPadding2D"]
