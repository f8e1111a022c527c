"""What both executors share: the stage names their `stages` tables are keyed by, the environment a worker
elsewhere needs, a failure as one line."""

from __future__ import annotations

import os
import re

from nt_harness import UserError
from nt_harness.pipeline import STAGES


def check_stages(stages: dict) -> dict:
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)} (stages: {', '.join(STAGES)})")
    return stages


def worker_env() -> dict[str, str]:
    """The variables that decide which plugins a worker loads and where from (``NT_HARNESS_*``, PYTHONPATH):
    a worker must build a node with the plugins this command planned it with."""
    return {k: v for k, v in os.environ.items() if k.startswith("NT_HARNESS_") or k == "PYTHONPATH"}


def needs(module: str, executor: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise UserError(f"the {executor} executor needs {module} ({e}); install it with "
                        f"pip install 'nt-harness[cluster]'") from e


def bytes_of(size: int | str) -> int:
    """``64G`` (Slurm's units, powers of 1024: K, M, G, T) or a number of bytes."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(size), re.IGNORECASE)
    if not match:
        raise ValueError(f"memory {size!r}: a number of bytes or e.g. 512M, 64G")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " "))


def one_line(text) -> str:
    """An error's text in a line: of a remote traceback between rules (submitit's), its last line, the
    ``Error: why``; else the first line."""
    parts = re.split(r"^-{5,}$", str(text), flags=re.MULTILINE)
    lines = [line.strip() for line in parts[1].splitlines() if line.strip()] if len(parts) >= 3 else []
    return lines[-1] if lines else (str(text).strip().splitlines() or ["no message"])[0]
