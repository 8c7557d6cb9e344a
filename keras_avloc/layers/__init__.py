"""Keras layers shared by the models: fused batch normalisation and the AVGN transformer/grouping blocks."""

from keras_avloc.layers.grouping import GroupAssignment, GroupingEncoder
from keras_avloc.layers.normalization import FusedBatchNormalization

__all__ = ["FusedBatchNormalization", "GroupAssignment", "GroupingEncoder"]
