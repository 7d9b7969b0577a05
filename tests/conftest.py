"""Shared fixtures: compose the project's real Hydra config with tiny, fast overrides."""

from __future__ import annotations

import os

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from tests.helpers import TINY, compose_config

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# Test tensors are tiny: one intra-op thread avoids OpenMP start-up and spin costs that dominate
# them (and oversubscription when subprocess tests run beside).
torch.set_num_threads(1)


@pytest.fixture
def tiny_cfg(tmp_path):
    """Factory: ``tiny_cfg("upsampler=carafe", ...)`` -> config of a seconds-long run."""

    def make(*overrides: str) -> DictConfig:
        return compose_config(tmp_path, [*TINY, *overrides])

    yield make
    GlobalHydra.instance().clear()
