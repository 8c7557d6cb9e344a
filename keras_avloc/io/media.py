"""Media I/O: audio, frames and videos in the dataset layout.

Every reader raises `MediaError` (a `ValueError`) naming the file and what is wrong, so callers can
count a bad clip as a skip instead of crashing half-way through a dataset. Every writer is atomic: it
writes a hidden temporary file next to the target and renames it into place with `os.replace`, so a
crash (even `kill -9`) never leaves a half-written file under a finished output name.

Layout written by `extract_clip` (see the dataset contract):
    ROOT/frames/<file_id>.jpg   middle frame of the clip
    ROOT/audio/<file_id>.wav    16 kHz mono PCM16, the whole clip
    ROOT/video/<file_id>.mp4    optional copy of the clip

Three modules hold the code and this one gathers their names (`media.read_audio(...)`): `keras_avloc.io.audio_files`
(audio), `keras_avloc.io.images` (frames and masks) and `keras_avloc.io.video` (videos and clip extraction).
"""

from keras_avloc.io.audio_files import (  # noqa: F401
    SOUNDFILE_EXTENSIONS, centre_clip, read_audio, read_multichannel_audio, resample_audio, write_wav,
)
from keras_avloc.io.errors import MediaError  # noqa: F401
from keras_avloc.io.images import (  # noqa: F401
    LARGE_IMAGE_PIXELS, open_image, read_image, read_image_cv2, read_mask, write_jpg, write_png,
)
from keras_avloc.io.video import (  # noqa: F401
    check_file_id, clip_is_complete, clip_output_paths, duration_seconds, extract_clip, middle_frame, read_frames,
    write_video,
)
