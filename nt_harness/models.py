"""Model specs: a local folder, a registered alias (built once into ``<workdir>/models/<alias>``), or a
Hugging Face hub id passed through unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from filelock import FileLock


def cpu_dtype() -> str:
    """The dtype a model runs in on this CPU: bf16 where it is native (oneDNN's own test; 3x fp32 for
    SmolLM2-135M on 2 AVX512-BF16 cores, benchmarks/embedded_generation.py), else fp32."""
    import torch

    return "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"


class ModelResolver:
    def __init__(self, aliases: dict[str, Callable[[Path], None]], cache: Path, progress=None):
        self.aliases, self.cache, self.progress = aliases, Path(cache), progress

    def resolve(self, spec: str) -> str:
        if spec in self.aliases:
            folder = self.cache / spec
            if not (folder / "config.json").exists():
                self.cache.mkdir(parents=True, exist_ok=True)
                with FileLock(self.cache / f".{spec}.lock"):  # processes sharing the cache build it once
                    if not (folder / "config.json").exists():
                        self._build(spec, folder)
            return str(folder)
        if Path(spec).expanduser().exists():
            return str(Path(spec).expanduser().resolve())
        return spec  # a hub id; transformers will fetch it (or fail clearly when offline)

    def _build(self, spec: str, folder: Path) -> None:
        tmp = self.cache / f".tmp-{spec}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.progress:
            self.progress.log(f"building model {spec!r} into {folder} (once)")
        self.aliases[spec](tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
