"""Shared fixtures. Model work runs on one thread (ENVIRONMENT.md: two threads collapse when another
process holds a core), and nothing touches a model hub."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """One model cache for the whole session: aliases are built once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def resolve(models_dir):
    from nt_harness.models import ModelResolver
    from nt_harness.plugins import Plugins

    return ModelResolver(Plugins().models, models_dir).resolve


@pytest.fixture(scope="session")
def tiny_llama(resolve):
    import torch

    torch.set_num_threads(1)
    return resolve("tiny-llama")
