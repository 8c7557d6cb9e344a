"""A PyTorch re-creation of the official LVS model (Chen et al., CVPR 2021), the baseline of
`benchmarks/bench_train.py`. Needs torch; nothing in the package imports this module.

Matches hche11/Localizing-Visual-Sounds-the-Hard-Way (model.py, models/base_models.py):

* image net: ResNet-18 with layer4 stride 1 and the 3-channel `conv1` stem -> [B, 512, 14, 14] at 224 px;
  audio net: the same network using its 1-channel `conv1_a` stem on [B, 1, 257, 200] spectrograms,
  then global max pooling (`AdaptiveMaxPool2d`) -> [B, 512]. Both nets also hold the unused stems and
  `fc` of the official layout (they receive no gradient).
* init as the official AVENet: Kaiming-normal (fan_out, relu) convs, BN weights N(1, 0.02), BN bias 0.
* trimap loss: A = matched cosine map, A0 = all pairs; Pos = sigmoid((A - eps_p) / tau),
  Neg = 1 - sigmoid((A - eps_n) / tau), PosAll = sigmoid((A0 - eps_p) / tau); soft-masked averages
  (sum / mask sum); easy negatives multiplied by (1 - 100 I); logits / 0.07; cross-entropy against 0;
  Adam(lr 1e-4).

For speed the model and inputs use `torch.channels_last`, and inference runs in eval mode under
`torch.inference_mode` (a strong, fair baseline).
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keras_avloc.backbones.torch_reference import TorchResNet18


class TorchLVS(nn.Module):
    """The official LVS network and trimap logits, channels-first in, as the original.

    Args:
        epsilon_positive: eps_p (official `--epsilon`, 0.65).
        epsilon_negative: eps_n (official `--epsilon2`, 0.4).
        tau: sigmoid sharpness (0.03).
        trimap: official `--tri_map` (True).
        hard_negatives: official `--Neg` (True).
        width: ResNet base width (64 = the official network; smaller only for smoke runs).
    """

    def __init__(self, epsilon_positive=0.65, epsilon_negative=0.4, tau=0.03, trimap=True, hard_negatives=True, width=64):
        super().__init__()
        self.imgnet = TorchResNet18(layer4_stride=1, width=width, lvs_modal="vision")
        self.audnet = TorchResNet18(layer4_stride=1, width=width, lvs_modal="audio")
        self.epsilon_positive = epsilon_positive
        self.epsilon_negative = epsilon_negative
        self.tau = tau
        self.trimap = trimap
        self.hard_negatives = hard_negatives
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, mean=1.0, std=0.02)
                nn.init.constant_(module.bias, 0.0)

    def features(self, image, audio):
        """L2-normalised image maps [B, C, h, w] and audio vectors [B, C]."""
        image_maps = F.normalize(self.imgnet(image), dim=1)
        audio_vecs = F.adaptive_max_pool2d(self.audnet(audio), 1).flatten(1)
        return image_maps, F.normalize(audio_vecs, dim=1)

    def similarity(self, image, audio):
        """Matched-pair cosine map A [B, h, w]."""
        image_maps, audio_vecs = self.features(image, audio)
        return torch.einsum("nchw,nc->nhw", image_maps, audio_vecs)

    def forward(self, image, audio):
        """Returns (A [B, 1, h, w], logits [B, 1 + B (+ 1)])."""
        image_maps, audio_vecs = self.features(image, audio)
        batch = image_maps.shape[0]
        matched = torch.einsum("nchw,nc->nhw", image_maps, audio_vecs).unsqueeze(1)
        all_pairs = torch.einsum("nchw,kc->nkhw", image_maps, audio_vecs)
        pos = torch.sigmoid((matched - self.epsilon_positive) / self.tau)
        neg_threshold = self.epsilon_negative if self.trimap else self.epsilon_positive
        neg = 1.0 - torch.sigmoid((matched - neg_threshold) / self.tau)
        pos_all = torch.sigmoid((all_pairs - self.epsilon_positive) / self.tau)
        positive = (pos * matched).flatten(2).sum(-1) / pos.flatten(2).sum(-1)
        diagonal_mask = 1.0 - 100.0 * torch.eye(batch, dtype=matched.dtype, device=matched.device)
        easy = (pos_all * all_pairs).flatten(2).sum(-1) / pos_all.flatten(2).sum(-1) * diagonal_mask
        columns = [positive, easy]
        if self.hard_negatives:
            columns.append((neg * matched).flatten(2).sum(-1) / neg.flatten(2).sum(-1))
        return matched, torch.cat(columns, dim=1) / 0.07


def lvs_loss_from_logits(logits):
    """Official objective: cross-entropy with the positive (column 0) as the target."""
    return F.cross_entropy(logits.float(), torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))


def configure_threads(threads):
    """Sets torch's intra-op threads (and 1 inter-op thread when still allowed)."""
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set, or parallel work has started


def build(width=64, channels_last=True, seed=0):
    torch.manual_seed(seed)
    model = TorchLVS(width=width)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def to_torch_inputs(images_nhwc, audio_nhwc, channels_last=True):
    """numpy channels-last batches -> torch NCHW tensors (channels_last memory format when asked)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    image = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
    audio = torch.from_numpy(np.ascontiguousarray(audio_nhwc)).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)
    return image, audio


class TrainStep:
    """One official training iteration (forward, trimap loss, backward, Adam 1e-4) per call.

    Args:
        model: a `TorchLVS`.
        precision: "fp32" or "bf16" (CPU autocast to bfloat16 for the forward pass).
        learning_rate: Adam learning rate (official 1e-4).
    """

    def __init__(self, model, precision="fp32", learning_rate=1e-4):
        self.model = model.train()
        self.precision = precision
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    def __call__(self, image, audio):
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            _, logits = self.model(image, audio)
            loss = lvs_loss_from_logits(logits)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


class Localizer:
    """Eval-mode heatmaps [B, H, W] (bilinear, half-pixel centres) under `torch.inference_mode`."""

    def __init__(self, model, precision="fp32"):
        self.model = model.eval()
        self.precision = precision

    def __call__(self, image, audio):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            maps = self.model.similarity(image, audio).float()
            heatmaps = F.interpolate(maps.unsqueeze(1), size=image.shape[2:], mode="bilinear", align_corners=False)
        return heatmaps[:, 0].numpy()
