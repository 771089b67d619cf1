"""The `mlp` model type: a PyTorch MLP on the log target (for positive targets), which can learn the non-linear
parts. Its weights travel as a `.pth` state dict beside the logged model, not inside the pickle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops_sandbox.train.models import ModelType


@dataclass
class MLPConfig:
    hidden: tuple[int, ...] = (64, 32)
    epochs: int = 80
    learning_rate: float = 3e-3
    batch_size: int = 256
    weight_decay: float = 1e-4
    seed: int = 0


def build_mlp(n_inputs: int, hidden: tuple[int, ...]):
    import torch.nn as nn

    layers: list[nn.Module] = []
    width = n_inputs
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _fit_mlp(x: np.ndarray, y: np.ndarray, config: MLPConfig):
    import torch

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net = build_mlp(x.shape[1], config.hidden)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    loss_fn = torch.nn.MSELoss()
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(xt), config.batch_size):
            batch = order[start : start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(net(xt[batch]), yt[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    net.eval()
    return net


class MLP(ModelType):
    name = "mlp"
    description = "PyTorch MLP on the log target: learns the non-linear parts"
    target_log = True
    config_type = MLPConfig
    requirements = ("torch",)
    serving_modules = ("torch", "torch.nn")  # about 120 MiB of each worker's memory when imported after the fork

    def fit(self, x: np.ndarray, y: np.ndarray, config: MLPConfig):
        return _fit_mlp(x, y, config)

    def predict(self, fitted: Any, x: np.ndarray) -> np.ndarray:
        import torch

        fitted.eval()
        with torch.inference_mode():
            return fitted(torch.from_numpy(x)).numpy().ravel()

    def save(self, fitted: Any, folder: Path) -> tuple[None, dict[str, Path]]:
        import torch

        pth = folder / "pytorch" / "model.pth"
        pth.parent.mkdir(parents=True, exist_ok=True)
        torch.save(fitted.state_dict(), pth)
        return None, {"state_dict": pth}

    def load(self, saved: Any, config: MLPConfig, artifacts: Mapping[str, str]):
        import torch

        state = torch.load(artifacts["state_dict"], weights_only=True)
        net = build_mlp(state["0.weight"].shape[1], config.hidden)
        net.load_state_dict(state)
        net.eval()
        return net


MODEL_TYPE = MLP()
