"""A plain-PyTorch ResNet-18 in torchvision's layout (torchvision itself is not required).

Used by the port tool's `--verify`, `tests/fixtures/make_resnet_fixture.py`, the torch cross-check
tests and PyTorch benchmarks. Needs torch; the package never imports this module unless asked to.

`TorchResNet18(lvs_modal="audio")` reproduces the official LVS nets' stem, which holds three stem
convs (`conv1` 3 ch, `conv1_a` 1 ch, `conv1_flow` 6 ch) and uses one of them, so their state dicts
can be generated for tests of the port's ignore rules.
"""

import numpy as np
import torch
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (expansion 1)."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TorchResNet18(nn.Module):
    """ResNet-18 returning the layer4 feature map (NCHW); `fc` exists only so state dicts match torchvision.

    Args:
        input_channels: channels of the (torchvision-style) `conv1`.
        layer4_stride: 2 (torchvision) or 1 (official LVS nets).
        width: base width (64 = ResNet-18).
        num_classes: size of the unused `fc` head (0 = no fc).
        lvs_modal: None for torchvision layout; "vision" or "audio" for the official LVS layout with
            `conv1` (3 ch), `conv1_a` (1 ch) and `conv1_flow` (6 ch), of which "vision" uses
            `conv1` and "audio" uses `conv1_a`.
    """

    def __init__(self, input_channels=3, layer4_stride=2, width=64, num_classes=1000, lvs_modal=None):
        super().__init__()
        if lvs_modal not in (None, "vision", "audio"):
            raise ValueError(f"lvs_modal must be None, 'vision' or 'audio', got {lvs_modal!r}")
        self.lvs_modal = lvs_modal
        if lvs_modal is None:
            self.conv1 = nn.Conv2d(input_channels, width, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1_a = nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False)
            self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
            self.conv1_flow = nn.Conv2d(6, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_planes = width
        for index, (multiplier, stride) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, layer4_stride))):
            planes = width * multiplier
            stage = nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))
            setattr(self, f"layer{index + 1}", stage)
            in_planes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes) if num_classes else None

    @property
    def active_input_channels(self):
        return 1 if self.lvs_modal == "audio" else self.conv1.in_channels

    def forward(self, x):
        x = self.conv1_a(x) if self.lvs_modal == "audio" else self.conv1(x)
        x = self.maxpool(self.relu(self.bn1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def randomize_(model, seed=0):
    """Random conv/fc weights and random BN affine parameters and running statistics (in place).

    Running statistics are drawn around calibrated values (one train-mode pass over random data) so
    features stay O(1) through the network, then perturbed so no BN is an identity. Returns the model
    in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.01)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.01)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration pass
        model.train()
        calibration = torch.randn((4, model.active_input_channels, 128, 128), generator=generator)
        model(calibration)
        for name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                shape = module.weight.shape
                # Like trained ResNets, the BNs ending a residual branch get small scales, which keeps
                # the residual stream O(1) instead of growing block after block.
                low, high = (0.2, 0.6) if name.endswith(("bn2", "downsample.1")) else (0.5, 1.5)
                module.weight.copy_(torch.empty(shape).uniform_(low, high, generator=generator))
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.2)
                module.running_mean.add_(torch.randn(shape, generator=generator) * 0.1)
                module.running_var.mul_(torch.empty(shape).uniform_(0.7, 1.4, generator=generator))
                module.momentum = 0.1
    return model.eval()


def run_nhwc(model, x_nhwc):
    """Runs `model` in eval mode on a channels-last numpy batch; returns the output channels-last."""
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2)))))
    return out.numpy().transpose(0, 2, 3, 1)


def state_dict_numpy(model):
    """The model's state dict as numpy arrays (torch names, torch layout), e.g. for np.savez."""
    return {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}


def model_for_state_dict(state_dict, audio=False, layer4_stride=2):
    """Builds a `TorchResNet18` matching a (prefix-stripped) state dict and loads it strictly.

    Returns:
        (model, input_channels the torch model expects).
    """
    lvs_layout = "conv1_a.weight" in state_dict
    width = int(np.shape(state_dict["bn1.weight"])[0])
    fc_weight = state_dict.get("fc.weight")
    num_classes = int(np.shape(fc_weight)[0]) if fc_weight is not None else 0
    input_channels = 3 if lvs_layout else int(np.shape(state_dict["conv1.weight"])[1])
    model = TorchResNet18(
        input_channels=input_channels,
        layer4_stride=layer4_stride,
        width=width,
        num_classes=num_classes,
        lvs_modal=("audio" if audio else "vision") if lvs_layout else None,
    )
    tensors = {key: torch.as_tensor(np.asarray(value)) for key, value in state_dict.items()}
    model.load_state_dict(tensors, strict=True)
    return model.eval(), model.active_input_channels
