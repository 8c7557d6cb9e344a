"""Spatial geometry (AVC / AVSA): the ambiX gains against the spherical-harmonic formula (scipy's associated
Legendre functions, as the official `spherical_harmonic_mn`), and analytic checks: a source is loudest in the beam
that points at it and its intensity vector points there, rotating by its own direction brings it to the front,
and a perspective crop's centre samples the panorama at its centre direction."""

import math
from math import factorial

import numpy as np
import pytest
from scipy.special import lpmv

from keras_avloc.spatial import (
    direction_to_equirect,
    equirect_to_direction,
    foa_encode,
    foa_gains,
    gnomonic_coordinates,
    intensity_vector,
    perspective_crop,
    power_map,
    rotate_foa,
    unit_vector,
    virtual_microphone,
)

RNG = np.random.default_rng(3)
DIRECTIONS = [(0.0, 0.0), (math.pi / 2, 0.0), (-2.5, 0.4), (1.0, -1.1), (3.0, 1.3)]


def _sn3d_real_harmonic(order, degree, phi, nu):
    """Real SN3D spherical harmonic from its formula: N |P_n^|m|(sin nu)| trig(m phi), Condon-Shortley phase removed."""
    norm = math.sqrt((2.0 - (degree == 0)) * factorial(order - abs(degree)) / factorial(order + abs(degree)))
    legendre = (-1) ** degree * lpmv(abs(degree), order, math.sin(nu))  # scipy includes (-1)^m
    return norm * legendre * (math.cos(abs(degree) * phi) if degree >= 0 else math.sin(abs(degree) * phi))


@pytest.mark.parametrize("phi, nu", DIRECTIONS)
def test_ambix_gains_are_the_sn3d_harmonics_in_acn_order(phi, nu):
    acn = [(0, 0), (1, -1), (1, 0), (1, 1)]  # ACN index n (n + 1) + m
    expected = [_sn3d_real_harmonic(n, m, phi, nu) for n, m in acn]
    np.testing.assert_allclose(foa_gains(phi, nu), expected, atol=1e-12)


@pytest.mark.parametrize("phi, nu", DIRECTIONS)
def test_a_source_is_loudest_in_the_beam_that_points_at_it(phi, nu):
    signal = RNG.normal(size=2000)
    foa = foa_encode(signal, phi, nu)
    grid_phi, grid_nu = np.meshgrid(np.linspace(-math.pi, math.pi, 73), np.linspace(-1.5, 1.5, 31))
    for pattern in ("cardioid", "supercardioid", "hypercardioid"):
        energy = np.array([np.sum(virtual_microphone(foa, p, n, pattern) ** 2)
                           for p, n in zip(grid_phi.ravel(), grid_nu.ravel())])
        best = np.argmax(energy)
        angle = np.degrees(np.arccos(np.clip(unit_vector(grid_phi.ravel()[best], grid_nu.ravel()[best]) @
                                             unit_vector(phi, nu), -1, 1)))
        assert angle < 6.0, (pattern, angle)  # the grid's spacing
        # pointing exactly at it gives the signal itself: the beam's on-axis gain is 1
        np.testing.assert_allclose(virtual_microphone(foa, phi, nu, pattern), signal, atol=1e-9)
    np.testing.assert_allclose(intensity_vector(foa), unit_vector(phi, nu), atol=1e-9)
    srp = power_map(foa, grid_phi, grid_nu)
    assert srp.shape == grid_phi.shape
    best = np.unravel_index(np.argmax(srp), srp.shape)
    assert np.degrees(np.arccos(unit_vector(grid_phi[best], grid_nu[best]) @ unit_vector(phi, nu))) < 6.0


@pytest.mark.parametrize("phi, nu", DIRECTIONS)
def test_rotating_by_a_sources_direction_brings_it_to_the_front(phi, nu):
    from keras_avloc.spatial import rotation_to_front

    signal, other = RNG.normal(size=500), RNG.normal(size=500)
    other_phi, other_nu = phi + 1.0, -nu / 2
    foa = foa_encode(np.stack([signal, other]), [phi, other_phi], [nu, other_nu])
    rotated = rotate_foa(foa, phi, nu)
    # the same scene encoded afresh: the first source at the front, the second where the rotation takes it
    x, y, z = rotation_to_front(phi, nu) @ unit_vector(other_phi, other_nu)
    expected = foa_encode(np.stack([signal, other]), [0.0, math.atan2(y, x)], [0.0, math.asin(np.clip(z, -1, 1))])
    np.testing.assert_allclose(rotated, expected, atol=1e-9)
    np.testing.assert_allclose(rotate_foa(foa_encode(signal, phi, nu), phi, nu), foa_encode(signal, 0.0, 0.0),
                               atol=1e-9)


def test_the_official_rotation_order_fails_at_elevation():
    """Rz(-phi) Ry(nu) (the official `rotate_ambix`) leaves an elevated viewpoint off the front axis."""
    phi, nu = math.pi / 2, math.pi / 4
    cp, sp = math.cos(-phi), math.sin(-phi)
    yaw = np.array([[cp, -sp, 0], [sp, cp, 0], [0, 0, 1]])
    pitch = np.array([[math.cos(nu), 0, math.sin(nu)], [0, 1, 0], [-math.sin(nu), 0, math.cos(nu)]])
    official = yaw @ pitch @ unit_vector(phi, nu)
    assert np.degrees(np.arccos(official[0])) > 30.0
    from keras_avloc.spatial import rotation_to_front

    np.testing.assert_allclose(rotation_to_front(phi, nu) @ unit_vector(phi, nu), [1.0, 0.0, 0.0], atol=1e-12)


def test_panorama_points_and_directions_round_trip():
    x, y = RNG.random(50), RNG.random(50)
    phi, nu = equirect_to_direction(x, y)
    back_x, back_y = direction_to_equirect(phi, nu)
    np.testing.assert_allclose(back_x, np.mod(x, 1.0), atol=1e-12)
    np.testing.assert_allclose(back_y, y, atol=1e-12)
    assert equirect_to_direction(0.5, 0.5) == (0.0, 0.0)  # the centre column looks to the front
    assert equirect_to_direction(0.25, 0.5)[0] == pytest.approx(math.pi / 2)  # a quarter to the left: +y


@pytest.mark.parametrize("center", [(0.5, 0.5), (0.1, 0.4), (0.8, 0.62), (0.97, 0.35)])
def test_a_crop_centre_samples_the_panorama_at_its_centre(center):
    size = (64, 64)
    coords = gnomonic_coordinates(center, (0.2, 0.2), size)
    np.testing.assert_allclose(coords[32, 32], center, atol=1e-9)  # the screen point (0.5, 0.5)
    # a marker painted on the panorama at the centre shows up in the middle of the crop
    height, width = 200, 400
    panorama = np.zeros((height, width, 3), np.float32)
    row, col = int(center[1] * height), int(center[0] * width)
    panorama[row - 3: row + 4, [(col + d) % width for d in range(-3, 4)]] = 1.0
    crop = np.asarray(perspective_crop(panorama, center, (0.2, 0.2), size))
    assert crop.shape == (64, 64, 3)
    peak = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert abs(peak[0] - 32) <= 4 and abs(peak[1] - 32) <= 4, peak
    # and every crop pixel samples the panorama along the ray of its own tangent-plane point
    ray_phi, ray_nu = equirect_to_direction(coords[..., 0], coords[..., 1])
    centre_phi, centre_nu = equirect_to_direction(*center)
    angles = np.degrees(np.arccos(np.clip(unit_vector(ray_phi, ray_nu) @ unit_vector(centre_phi, centre_nu), -1, 1)))
    assert angles.max() < 60.0 and angles[32, 32] < 1e-6


def test_crops_across_the_seam_interpolate_with_non_negative_weights():
    """A crop centred on the panorama's seam (x = 0) blends the first and last columns, never overshoots."""
    panorama = RNG.random((50, 100, 3)).astype(np.float32)
    crop = np.asarray(perspective_crop(panorama, (0.0, 0.5), (0.1, 0.1), (32, 32)))
    assert crop.min() >= panorama.min() - 1e-6 and crop.max() <= panorama.max() + 1e-6
    constant = np.full((50, 100, 3), 0.7, np.float32)
    np.testing.assert_allclose(np.asarray(perspective_crop(constant, (0.999, 0.98), (0.2, 0.2), (16, 16))), 0.7,
                               atol=1e-6)
