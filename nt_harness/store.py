"""Content-addressed stage store.

A stage output lives in ``<workdir>/store/<stage>/<component>-<key>/`` with a ``manifest.json``. The key
hashes (stage, component name and version, settings, input keys), so a stage that has run is never run
again and two recipes that share a pool share it. Outputs are written into a temporary folder and
renamed into place only when complete: a crash leaves nothing half-written. Many processes may share a store:
a stage is built under its own lock (``building``), so no stage is built twice at once and different stages
never wait for each other. ``scratch`` folders
survive crashes for stages that resume (teacher shards). The manifest lists every file with its size, so an
entry damaged afterwards (a disk filled up, a file edited or truncated) is found when read, moved aside to
``.corrupt-*`` and built again rather than built on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock, Timeout

from nt_harness import UserError

log = logging.getLogger("nt_harness")

TRACKED_VERSIONS = ("nt-harness", "torch", "transformers", "accelerate", "peft", "lm-eval", "datasets", "reasoning-gym")


def library_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_VERSIONS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class StoreLocked(UserError):
    pass


def file_sizes(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative path -> bytes), for the manifest."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def damage(path: Path) -> str | None:
    """Why the entry at ``path`` cannot be used (its manifest does not parse, a file it lists is missing or
    has another size), or None. Entries written before manifests listed their files are checked for the
    manifest only."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"manifest.json unreadable: {type(e).__name__}"
    if not isinstance(manifest, dict):
        return "manifest.json is not a table"
    for name, size in (manifest.get("files") or {}).items():
        file = path / name
        if not file.is_file():
            return f"{name} missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {size}"
    return None


@dataclass(frozen=True)
class Entry:
    stage: str
    key: str
    path: Path

    @property
    def manifest(self) -> dict:
        return json.loads((self.path / "manifest.json").read_text())

    def table(self, name: str = "data") -> pa.Table:
        return pq.read_table(self.path / f"{name}.parquet")


class Store:
    def __init__(self, workdir: str | Path):
        self.root = Path(workdir).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # read-only, under a regular file, no permission
            raise UserError(f"workdir {self.root}: cannot create it ({e.strerror or e})") from None
        self._lock = FileLock(self.root / ".lock")

    @contextmanager
    def locked(self):
        """The whole store to one process (a script that wants it so); runs use the per-stage ``building``."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise StoreLocked(f"another nt-harness run is using {self.root} (lock {self.root / '.lock'})") from None
        except OSError as e:
            raise UserError(f"workdir {self.root}: cannot write its lock file ({e.strerror or e})") from None
        try:
            yield self
        finally:
            self._lock.release()

    @contextmanager
    def building(self, stage: str, component: str, key: str, wait=None):
        """Hold the lock of one stage while it is built, so two processes never build it twice and different
        stages never wait for each other. The lock is the OS's (flock): a process killed while building
        releases it, and the next builder clears what it left (its ``.tmp-*`` folder). ``wait(text)`` is told
        when another process holds the lock, before this one waits for it."""
        lock_path = self.root / "locks" / stage / f"{component.replace(':', '_')}-{key}.lock"
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(lock_path)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                if wait:
                    wait(f"{stage} {component} ({key[:8]}) is being built by another process: waiting for it")
                lock.acquire()
        except OSError as e:
            raise UserError(f"workdir {self.root}: cannot write the lock file {lock_path} ({e.strerror or e})") from None
        try:
            final = self.path(stage, component, key)
            for stale in final.parent.glob(f".tmp-{final.name}-*"):  # a killed builder's; the lock says it is gone
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            lock.release()

    @staticmethod
    def key(stage: str, component: str, version: str, settings: dict, inputs: dict[str, str]) -> str:
        return fingerprint(
            {"stage": stage, "component": component, "version": version, "settings": settings, "inputs": inputs}
        )[:20]

    def path(self, stage: str, component: str, key: str) -> Path:
        return self.root / "store" / stage / f"{component.replace(':', '_')}-{key}"

    def get(self, stage: str, component: str, key: str, warn=log.warning) -> Entry | None:
        """The stored entry, or None when there is none or it is damaged: then it is moved aside, to be built
        again, and ``warn`` says so."""
        path = self.path(stage, component, key)
        if not (path / "manifest.json").exists():
            return None
        problem = damage(path)
        if problem is None:
            return Entry(stage, key, path)
        aside = path.parent / f".corrupt-{path.name}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        try:
            path.rename(aside)
        except FileNotFoundError:  # another process set it aside first
            return None
        warn(f"store entry {path} is damaged ({problem}): moved to {aside.name}, building it again")
        return None

    def scratch(self, stage: str, component: str, key: str) -> Path:
        path = self.root / "scratch" / stage / f"{component.replace(':', '_')}-{key}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextmanager
    def writing(self, stage: str, component: str, key: str, manifest: dict):
        """Yield a temp folder; on success write the manifest and rename it into place atomically."""
        final = self.path(stage, component, key)
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        manifest = {
            "stage": stage,
            "key": key,
            **manifest,
            "files": file_sizes(tmp),
            "versions": library_versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_s": round(time.time() - started, 3),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        if final.exists():  # --force: replace the old output only once the new one is complete
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        shutil.rmtree(self.root / "scratch" / stage / final.name, ignore_errors=True)


def write_table(table: pa.Table, folder: Path, name: str = "data") -> Path:
    path = folder / f"{name}.parquet"
    pq.write_table(table, path)
    return path
