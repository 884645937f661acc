"""A small CIFAR-style CNN in the form specc's PyTorch emitter writes (config dataclass, module, aux_loss)."""

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class TinyCNNConfig:
    in_channels: int = 3
    width: int = 8
    num_classes: int = 10
    dropout: float = 0.1


class TinyCNN(nn.Module):
    def __init__(self, config: TinyCNNConfig = TinyCNNConfig()):
        super().__init__()
        w = config.width
        self.conv1 = nn.Conv2d(config.in_channels, w, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.drop = nn.Dropout(config.dropout)
        self.fc = nn.Linear(2 * w * 8 * 8, config.num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)  # [B, w, 16, 16]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # [B, 2w, 8, 8]
        return self.fc(self.drop(x.flatten(1)))  # [B, num_classes]

    def aux_loss(self) -> torch.Tensor:
        return torch.zeros(())
