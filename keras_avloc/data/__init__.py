"""Datasets: layout, annotation parsers, spectrogram front-ends, the tf.data pipeline and TFRecord shards.

`load_split` and the parsers need only numpy; `make_dataset` and the front-ends import TensorFlow when first
used, so `import keras_avloc.data` stays light.
"""

from keras_avloc.data.annotations import (
    AnnotationError,
    class_names,
    flickr_records,
    load_split,
    read_flickr_annotations,
    read_flickr_xml,
    read_id_list,
    read_music_duet_json,
    read_music_solo_json,
    read_vggsound_duet_csv,
    read_vggss_json,
    write_split,
)
from keras_avloc.data.inputs import InputSettings
from keras_avloc.data.protocols import extended_records, read_nonsounding_pairs

_LAZY = {
    "make_dataset": "keras_avloc.data.dataset",
    "SkipCounter": "keras_avloc.data.pipeline",
    "SkipReport": "keras_avloc.data.pipeline",
    "lvs_spectrogram": "keras_avloc.data.audio",
    "csol_logmel": "keras_avloc.data.audio",
    "avsa_logmel": "keras_avloc.data.audio",
    "get_frontend": "keras_avloc.data.audio",
    "write_tfrecords": "keras_avloc.data.tfrecord",
    "make_tfrecord_dataset": "keras_avloc.data.tfrecord",
    "make_sphere_dataset": "keras_avloc.data.sphere_dataset",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'keras_avloc.data' has no attribute {name!r}")


__all__ = [
    "AnnotationError",
    "InputSettings",
    "class_names",
    "extended_records",
    "flickr_records",
    "load_split",
    "read_flickr_annotations",
    "read_flickr_xml",
    "read_id_list",
    "read_music_duet_json",
    "read_music_solo_json",
    "read_nonsounding_pairs",
    "read_vggsound_duet_csv",
    "read_vggss_json",
    "write_split",
    *_LAZY,
]
