"""Spatial geometry for 360° video with first-order ambisonics (AVC / AVSA): pure functions.

* `geometry`: equirectangular <-> direction conventions and perspective (gnomonic) crops of a panorama.
* `ambisonics`: first-order ambisonics in ambiX (ACN W, Y, Z, X; SN3D): encoding a source at a direction,
  rotating the sound field to a viewpoint, virtual-microphone beams, the intensity vector and a power map.

Conventions follow the official code (pedro-morgado/AVSpatialAlignment `utils/nfov.py`, `utils/video360.py`,
`utils/ambisonics/`): a panorama point (x, y) in [0, 1)^2 (x to the right, y down) has azimuth
phi = (1 - 2x) pi (positive to the left, 0 at the centre column) and elevation nu = (1 - 2y) pi / 2; the
direction vector is (cos nu cos phi, cos nu sin phi, sin nu) (x front, y left, z up).
"""

from keras_avloc.spatial.ambisonics import (
    BEAM_PATTERNS,
    foa_encode,
    foa_gains,
    intensity_vector,
    power_map,
    rotate_foa,
    rotation_to_front,
    srp_direction,
    virtual_microphone,
)
from keras_avloc.spatial.geometry import (
    crop_taps,
    direction_to_equirect,
    equirect_to_direction,
    gnomonic_coordinates,
    perspective_crop,
    perspective_crops,
    unit_vector,
)

__all__ = [
    "BEAM_PATTERNS",
    "crop_taps",
    "direction_to_equirect",
    "equirect_to_direction",
    "foa_encode",
    "foa_gains",
    "gnomonic_coordinates",
    "intensity_vector",
    "perspective_crop",
    "perspective_crops",
    "power_map",
    "rotate_foa",
    "rotation_to_front",
    "srp_direction",
    "unit_vector",
    "virtual_microphone",
]
