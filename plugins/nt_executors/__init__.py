"""Executors `local` (one node after another, in this process: the default) and `local-parallel` (up to
``workers`` nodes at once, each in its own process, as the graph's dependencies allow)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import traceback
from multiprocessing.connection import wait

from pydantic import Field

import nt_harness
from nt_harness import UserError
from nt_harness.components import Settings
from nt_harness.executors import Executor, Study, run_node
from nt_harness.pipeline import Node


class LocalExecutor(Executor):
    name = "local"
    description = "one stage after another in this process (the default)"

    def run(self, nodes: list[Node], study: Study) -> None:
        for node in nodes:
            study.run_here(node)


class LocalParallelExecutor(Executor):
    name = "local-parallel"
    description = "up to `workers` stages at once, each in its own process, as their inputs become stored"

    class Settings(Settings):
        workers: int = Field(2, ge=1)
        threads: int | None = Field(None, ge=1, description="torch threads per worker (default: --threads "
                                                            "divided between the workers, at least 1)")

    # how many at once and their threads change how fast a study runs, never what it stores
    execution = ("workers", "threads")

    def run(self, nodes: list[Node], study: Study) -> None:
        workers = self.settings.workers
        threads = self.settings.threads or max(1, study.threads // workers)
        keys = {n.key for n in nodes}
        pending = [n for n in nodes if not study.stored(n)]
        done = keys - {n.key for n in pending}
        spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch state forked, any OS
        running: dict = {}  # sentinel -> (process, receiving end, node)
        try:
            while pending or running:
                ready = [n for n in pending if all(d in done or d not in keys for d in n.deps)]
                for node in ready[:workers - len(running)]:
                    pending.remove(node)
                    receive, send = spawn.Pipe(duplex=False)
                    process = spawn.Process(target=_work, args=(send, study.workdir, node, threads),
                                            name=f"nt-harness {node}")
                    process.start()
                    send.close()
                    running[process.sentinel] = (process, receive, node)
                    study.log(f"[dim]→ {node} ({'base student' if node.base else node.recipe}, "
                              f"worker pid {process.pid})[/]")
                if not running:
                    raise RuntimeError("nodes whose inputs are never built: " + ", ".join(map(str, pending)))
                for sentinel in wait(list(running)):
                    process, receive, node = running.pop(sentinel)
                    try:
                        outcome = receive.recv()
                    except EOFError:  # it died before it could say
                        outcome = None
                    process.join()
                    if outcome is None:
                        code = process.exitcode
                        how = f"killed by signal {-code}" if code and code < 0 else f"exit code {code}"
                        raise UserError(f"the worker building {node} died ({how}); it stored nothing, "
                                           f"a rerun builds it")
                    if outcome[0] == "error":  # as itself: a user's error stays one line, a bug shows where
                        error, remote = outcome[1], outcome[2]
                        error.add_note(f"in the worker building {node}:\n{remote}")
                        raise error
                    done.add(node.key)
        finally:
            for process, _, _ in running.values():  # a failure or Ctrl-C: the others stop, storing nothing
                process.terminate()
            for process, _, _ in running.values():
                process.join()


def _work(send, workdir: str, node: Node, threads: int) -> None:
    """A worker process: build one node, send ("ok",) or ("error", exception, traceback text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    try:
        run_node(workdir, node, threads)
        send.send(("ok",))
    except BaseException as e:  # noqa: BLE001 - every failure goes to the parent, which reports it
        remote = traceback.format_exc()
        try:
            send.send(("error", e, remote))
        except Exception:  # noqa: BLE001 - an exception that does not pickle: its text
            send.send(("error", RuntimeError(f"{type(e).__name__}: {e}"), remote))


@nt_harness.hookimpl
def register_executors(register):
    register(LocalExecutor)
    register(LocalParallelExecutor)
