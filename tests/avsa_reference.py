"""The released AVC / AVSA networks re-created in torch in the official module layout (pedro-morgado/AVSpatialAlignment:
`models/av_wrapper.py`, `models/video.py` R2Plus1D depth 18, `models/network_blocks.py` BasicR2P1DBlock / Basic2DBlock,
`models/audio.py` Conv2D depth 10, `criterions/contrastive.py` and `criterions/video2audio_seq.py` heads,
`criterions/transformers.py` SimpleTransformer with SimplifiedAttention), so that their state dicts carry the official
key names. Written for the tests from the published architecture; no official code is copied. Checked once against the
official modules (same keys and shapes, outputs within 1e-6 relative): docs/methods/avsa.md, "Released checkpoints".
"""

import math

import torch
from torch import nn


class R2P1Block(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.spt_conv1 = nn.Conv3d(in_planes, planes, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(planes)
        self.tmp_conv1 = nn.Conv3d(planes, planes, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(planes)
        self.spt_conv2 = nn.Conv3d(planes, planes, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(planes)
        self.tmp_conv2 = nn.Conv3d(planes, planes, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(planes)
        self.res_conv = (nn.Conv3d(in_planes, planes, 1, stride, bias=False) if stride != 1 or in_planes != planes
                         else None)

    def forward(self, x):
        y = torch.relu(self.spt_bn1(self.spt_conv1(x)))
        y = torch.relu(self.tmp_bn1(self.tmp_conv1(y)))
        y = self.tmp_conv2(torch.relu(self.spt_bn2(self.spt_conv2(y))))
        return torch.relu(self.out_bn(y + (x if self.res_conv is None else self.res_conv(x))))


class VideoNet(nn.Module):
    def __init__(self, width=64):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv3d(3, width, (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
                                   nn.BatchNorm3d(width), nn.ReLU())
        planes = width
        for stage, multiplier in zip((2, 3, 4, 5), (1, 2, 4, 8)):
            out = width * multiplier
            setattr(self, f"conv{stage}x", nn.Sequential(R2P1Block(planes, out, 1 if stage == 2 else 2),
                                                         R2P1Block(out, out)))
            planes = out

    def forward(self, x):  # [B, 3, T, H, W] -> [B, 8 width]
        for name in ("conv1", "conv2x", "conv3x", "conv4x", "conv5x"):
            x = getattr(self, name)(x)
        return x.amax(dim=(2, 3, 4))


class Block2D(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class AudioNet(nn.Module):
    def __init__(self, width=64, channels=4):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(channels, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = Block2D(width, width)
        self.block2 = Block2D(width, 2 * width, 2)
        self.block3 = Block2D(2 * width, 4 * width, 2)
        self.block4 = Block2D(4 * width, 8 * width)

    def forward(self, x):  # [B, C, T, M] -> [B, 8 width]
        for name in ("conv1", "block1", "block2", "block3", "block4"):
            x = getattr(self, name)(x)
        return x.amax(dim=(2, 3))


class Wrapper(nn.Module):
    """`AV_Wrapper` with `proj_dim: null`: the two encoders only."""

    def __init__(self, width=64):
        super().__init__()
        self.video_model = VideoNet(width)
        self.audio_model = AudioNet(width)


class Head(nn.Module):
    def __init__(self, dim, out=128):
        super().__init__()
        self.projection = nn.Sequential(nn.Linear(dim, out))

    def forward(self, x):
        return self.projection(x)


class Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.query, self.key, self.value, self.dense = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x):
        scores = self.query(x) @ self.key(x).transpose(-1, -2) / math.sqrt(x.shape[-1])
        return self.dense(torch.softmax(scores, dim=-1) @ self.value(x))


class TransformerLayer(nn.Module):
    def __init__(self, dim, expansion=4):
        super().__init__()
        self.attention = Attention(dim)
        self.attention_norm = nn.LayerNorm(dim)
        self.dense = nn.Sequential(nn.Linear(dim, dim * expansion), nn.ReLU(), nn.Linear(dim * expansion, dim))
        self.dense_norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.attention_norm(self.attention(x) + x)
        return torch.relu(self.dense_norm(self.dense(x) + x))


class Transformer(nn.Module):
    def __init__(self, dim, depth=2):
        super().__init__()
        self.transformer = nn.Sequential(*[TransformerLayer(dim) for _ in range(depth)])

    def forward(self, x):
        return self.transformer(x)


class AVCCriterion(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.video_projection = Head(dim)
        self.audio_projection = Head(dim)


class AVSACriterion(nn.Module):
    def __init__(self, dim, depth=2):
        super().__init__()
        self.v2a_transformer = Transformer(dim, depth)
        self.a2v_transformer = Transformer(dim, depth)
        for head in ("video_head", "audio_head", "video_pred_head", "audio_pred_head"):
            setattr(self, head, Head(dim))


class MultiTask(nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.losses = nn.ModuleList([loss])


def randomize_(module, seed):
    """Random weights and batch-norm statistics (eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if tensor.ndim >= 2:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            else:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.75)
    return module.eval()
