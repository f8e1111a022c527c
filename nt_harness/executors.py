"""Executors: who builds a study's graph of stages, and where.

``plan_study`` turns a command's runs into one graph (``pipeline.Node``s, a node that runs share listed
once); an ``Executor`` builds its nodes; the command then reads the results from the store, so the
leaderboard is the same whatever ran where. ``run_node`` builds one node from plain data in any process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nt_harness.components import Component
from nt_harness.pipeline import Node, Pipeline
from nt_harness.recipes import RunSpec


class Executor(Component):
    """Builds the nodes of a study. Register subclasses with ``register_executors``; a profile's ``executor``
    section (``--executor NAME``, ``--set executor.workers=4``) picks one and its ``Settings``.

    The interface, for an executor of one's own (Ray, Slurm through submitit, ...):

    - ``run(nodes, study)`` builds every node and returns when all are stored, or raises the first failure
      (a ``SpecError`` or other user error as itself: it is printed as one line). ``nodes`` are in an order
      where each comes after the nodes it reads; ``node.deps`` are their keys (a key outside ``nodes`` is
      already stored). A node may start once its deps are built; nodes without a path between them may run
      at the same time, anywhere that sees the store's folder.
    - In this process, ``study.run_here(node)`` builds a node (in-code plugins and progress bars included).
    - In another process or machine, call ``run_node(study.workdir, node, threads)``: a module-level
      function whose arguments pickle; it loads the installed plugins (``NT_HARNESS_*`` environment
      variables apply), opens the store and builds the node, its inputs found there.
    - ``study.stored(node)`` says whether a node needs no building (stored and not forced), to skip it.
    - ``describe(nodes, study)`` is ``--dry-run``'s output; override it to add how a node would be submitted.

    Building is safe to repeat and to race: a stage is built under its own lock in the store, so two workers
    (or two commands) given the same node build it once, and a worker killed mid-stage stores nothing.
    """

    kind = "executor"

    def run(self, nodes: list[Node], study: "Study") -> None:
        raise NotImplementedError

    def describe(self, nodes: list[Node], study: "Study") -> list[str]:
        """``--dry-run``: a line per node it would build (stage, recipe, key), building nothing; an executor
        that submits jobs adds how it would submit them."""
        return [f"{n.stage}\t{n.recipe}\t{n.key}" for n in nodes if not study.stored(n)]


@dataclass
class Study:
    """What an executor gets besides the nodes: the pipeline of this process and what a worker elsewhere
    needs to build one (the store's folder, the torch threads the command was given)."""

    pipeline: Pipeline
    workdir: str
    threads: int

    def run_here(self, node: Node) -> None:
        self.pipeline.build_node(node)

    def stored(self, node: Node) -> bool:
        store = self.pipeline.store
        return not node.force and (store.path(node.stage, node.component, node.key) / "manifest.json").exists()

    def log(self, text: str) -> None:
        self.pipeline.progress.log(text)


def plan_study(pipe: Pipeline, runs: list[tuple[str, RunSpec, bool]], until: str | None = None) -> list[Node]:
    """One graph for ``runs`` ((recipe, spec, base) each): every run's nodes, each key once, in run order."""
    nodes: dict[str, Node] = {}
    for recipe, spec, base in runs:
        for node in pipe.plan(recipe, spec, until=until, base=base):
            nodes.setdefault(node.key, node)
    return list(nodes.values())


def run_node(workdir: str, node: Node, threads: int) -> str:
    """Build ``node`` in this process: plugins from their entry points, the store at ``workdir``. For a worker
    of an executor (another process, another machine); returns the node's key."""
    from rich.console import Console

    from nt_harness.plugins import Plugins
    from nt_harness.progress import Progress
    from nt_harness.store import Store

    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    progress = Progress(Console(stderr=True), disable=True)  # one line per stage built; no bars from workers
    pipe = Pipeline(Plugins(), Store(workdir), progress, threads=threads,
                    force={node.stage} if node.force else frozenset())
    pipe.build_node(node)
    return node.key
