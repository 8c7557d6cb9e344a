"""ImageNet image normalisation (torchvision's constants), the one copy every module uses."""

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalize_images(images_uint8):
    """RGB uint8 [..., 3] -> float32 `(x / 255 - mean) / std` (torchvision `ToTensor` + `Normalize`)."""
    return (np.asarray(images_uint8, np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def denormalize_images(images):
    """ImageNet-normalised float [..., 3] -> RGB uint8 (rounded, clipped to 0..255)."""
    rgb = np.asarray(images, np.float32) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
