"""First-order ambisonics in ambiX: ACN channel order (W, Y, Z, X) and SN3D normalisation (numpy).

The spherical-harmonic gains are the official ones (`utils/ambisonics/common.py` `spherical_harmonics`, order 1,
ACN, SN3D): a plane wave s from azimuth phi and elevation nu gives W = s, Y = s cos nu sin phi, Z = s sin nu,
X = s cos nu cos phi (directions as `keras_avloc.spatial.geometry`).

Official bug not reproduced: `utils/video360.py rotate_ambix` rotates the field by Rz(-phi) @ Ry(nu), which brings
a viewpoint's direction to the front only at elevation 0; the rotation that does so at every elevation is
Ry(nu) @ Rz(-phi) (`rotation_to_front`; its other order is the commented-out line beside the official one).
"""

import numpy as np

from keras_avloc.spatial.geometry import unit_vector

BEAM_PATTERNS = {"omni": 1.0, "cardioid": 0.5, "supercardioid": 0.366, "hypercardioid": 0.25}
"""First-order virtual microphones a + (1 - a) cos(theta): the weight a of W."""


def foa_gains(phi, nu):
    """ACN / SN3D gains [..., 4] of plane waves from (phi, nu)."""
    direction = unit_vector(phi, nu)
    ones = np.ones(direction.shape[:-1] + (1,))
    return np.concatenate([ones, direction[..., 1:2], direction[..., 2:3], direction[..., 0:1]], axis=-1)


def foa_encode(signals, phi, nu):
    """Encodes mono sources at their directions into one ambiX field.

    Args:
        signals: [T] or [N, T] source signals.
        phi, nu: scalars or [N] directions (radians).

    Returns:
        float64 [4, T] (W, Y, Z, X).
    """
    signals = np.atleast_2d(np.asarray(signals, np.float64))
    gains = np.atleast_2d(foa_gains(np.atleast_1d(phi), np.atleast_1d(nu)))  # [N, 4]
    if len(gains) != len(signals):
        raise ValueError(f"foa_encode: {len(signals)} signals but {len(gains)} directions.")
    return gains.T @ signals


def _xyz(foa):
    return np.asarray(foa, np.float64)[[3, 1, 2]]  # ACN (W, Y, Z, X) -> (X, Y, Z)


def rotation_to_front(phi, nu):
    """The 3 x 3 rotation Ry(nu) Rz(-phi) that takes the direction (phi, nu) to the front (1, 0, 0)."""
    cp, sp, cn, sn = np.cos(-phi), np.sin(-phi), np.cos(nu), np.sin(nu)
    yaw = np.array([[cp, -sp, 0.0], [sp, cp, 0.0], [0.0, 0.0, 1.0]])
    pitch = np.array([[cn, 0.0, sn], [0.0, 1.0, 0.0], [-sn, 0.0, cn]])
    return pitch @ yaw


def rotate_foa(foa, phi, nu):
    """The sound field as heard facing the viewpoint (phi, nu): what came from there now comes from the front.

    Args:
        foa: [4, T] ambiX.
        phi, nu: the viewpoint (radians).

    Returns:
        float64 [4, T] ambiX (W unchanged).
    """
    xyz = rotation_to_front(phi, nu) @ _xyz(foa)
    return np.stack([np.asarray(foa, np.float64)[0], xyz[1], xyz[2], xyz[0]])


def virtual_microphone(foa, phi, nu, pattern="cardioid"):
    """A first-order beam towards (phi, nu): a W + (1 - a) (d . (X, Y, Z)) [T]; a unit plane wave from angle theta
    to the beam gives a + (1 - a) cos(theta) (`BEAM_PATTERNS`)."""
    if pattern not in BEAM_PATTERNS:
        raise ValueError(f"virtual_microphone: pattern must be one of {', '.join(BEAM_PATTERNS)}, got {pattern!r}.")
    weight = BEAM_PATTERNS[pattern]
    return weight * np.asarray(foa, np.float64)[0] + (1.0 - weight) * (unit_vector(phi, nu) @ _xyz(foa))


def intensity_vector(foa):
    """The active intensity direction [3] (mean of W (X, Y, Z)), unit length: it points at a single source."""
    foa = np.asarray(foa, np.float64)
    vector = (foa[0][None] * _xyz(foa)).mean(axis=1)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def power_map(foa, phi, nu):
    """Steered-response power of the official projection decoder: for each direction (phi, nu [...]), the energy of
    Y(direction) . foa over time (`video360.AmbiPower`). Returns [...]."""
    gains = foa_gains(phi, nu)  # [..., 4]
    foa = np.asarray(foa, np.float64)
    covariance = foa @ foa.T  # sum_t (g . foa_t)^2 = g^T (foa foa^T) g: one 4 x 4 matrix instead of every sample
    flat = gains.reshape(-1, 4)
    return np.einsum("ni,ij,nj->n", flat, covariance, flat).reshape(np.shape(gains)[:-1])


def srp_direction(foa, resolution_degrees=2.0):
    """The direction (phi, nu) of the steered-response power's maximum on a grid of `resolution_degrees`: the
    classical direction-of-arrival estimate from first-order ambisonics."""
    step = np.radians(resolution_degrees)
    phi, nu = np.meshgrid(np.arange(-np.pi, np.pi, step), np.arange(-np.pi / 2, np.pi / 2 + 1e-9, step))
    best = np.unravel_index(np.argmax(power_map(foa, phi, nu)), phi.shape)
    return float(phi[best]), float(nu[best])
