"""The bottom layer: files and media. Nothing here imports another keras-avloc package.

    files     atomic writes (`atomic_output`, `write_json`, ...) and stale-temporary cleanup
    media     audio / image / video decoding and encoding (PyAV, soundfile, PIL, OpenCV), `MediaError`
    paths     the clip-id rule and paths that must stay inside a dataset root
    imagenet  ImageNet normalisation constants
    errors    `AvlocError`, the base of every bad-input error
"""
