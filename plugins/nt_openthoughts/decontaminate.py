"""Decontamination against benchmark questions: a pool question is dropped when it shares a word 13-gram
with any question of the benchmarks the run evaluates (OpenThoughts, arXiv 2506.04178: 13-gram or high
similarity decontamination against every evaluation set).

By default the questions come from the run's benchmarks themselves (``Benchmark.questions()``; the lmeval
benchmark renders each task's docs with lm-eval, hub presets included), so what is evaluated is what is
decontaminated against. An explicit list of lm-eval task names is read from the tasks' own files instead (the
task YAML's ``dataset_kwargs.data_files``, rendered with its ``doc_to_text`` template). An n-gram that occurs in
``boilerplate_docs`` or more benchmark questions is template text (procedural questions such as
reasoning-gym's share their instructions), not evidence that a question leaked.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import yaml

from nt_harness.recipes import SpecError

WORD = re.compile(r"\w+")


class _TaskLoader(yaml.SafeLoader):
    """lm-eval YAML with its ``!function`` tags read as plain strings (nothing is imported)."""


_TaskLoader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than n words is one n-gram of all its words (it can only match whole)."""
    toks = words(text)
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def task_configs(folder: Path) -> dict[str, tuple[Path, dict]]:
    configs = {}
    for path in sorted(folder.rglob("*.yaml")):
        try:
            cfg = yaml.load(path.read_text(), Loader=_TaskLoader)
        except yaml.YAMLError:
            continue
        if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
            configs[cfg["task"]] = (path, cfg)
    return configs


def render(template, doc: dict) -> str:
    """A task's doc_to_text: a Jinja template, a field name, or (a !function) the doc's question field."""
    if isinstance(template, str) and "{{" in template:
        import jinja2

        return jinja2.Template(template).render(**doc)
    if isinstance(template, str) and template in doc:
        return str(doc[template])
    for key in ("question", "problem", "prompt", "text"):
        if key in doc:
            return str(doc[key])
    raise SpecError(f"cannot read a question from a benchmark row with keys {', '.join(sorted(doc))}")


def benchmark_questions(tasks: list[str], folder: Path) -> dict[str, list[str]]:
    """task -> its questions, from local JSON-lines task files."""
    configs = task_configs(folder)
    out = {}
    for task in tasks:
        if task not in configs:
            found = ", ".join(sorted(configs)) or "none"
            raise SpecError(f"decontaminate: no lm-eval task {task!r} under {folder} (found: {found})")
        path, cfg = configs[task]
        files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        if cfg.get("dataset_path") not in ("json", "jsonl") or not files:
            raise SpecError(f"decontaminate: task {task!r} ({path}) is not a local JSON-lines task; "
                            "only those are read")
        names = files.values() if isinstance(files, dict) else [files] if isinstance(files, str) else files
        questions = []
        for name in names:
            for name_ in [name] if isinstance(name, str) else name:
                file = path.parent / name_ if (path.parent / name_).exists() else Path(name_)
                with file.open() as f:
                    questions += [render(cfg.get("doc_to_text"), json.loads(line)) for line in f if line.strip()]
        out[task] = questions
    return out


def run_benchmark_questions(benchmarks) -> dict[str, list[str]]:
    """task -> questions, over every benchmark of the run. A benchmark that cannot list its questions is an
    error naming it, not a skip: a skipped benchmark is one the selected data may have leaked into."""
    out: dict[str, list[str]] = {}
    for bench in benchmarks:
        try:
            questions = bench.questions()
        except NotImplementedError:
            raise SpecError(f"decontaminate: benchmark {bench.name!r} does not list its questions "
                            "(Benchmark.questions); set selector.decontaminate to the lm-eval tasks to check against, "
                            "or [] for none") from None
        for task, texts in questions.items():
            out.setdefault(task, []).extend(texts)
    return out


class Contamination:
    """An index of benchmark n-grams; ``leaks(text)`` says whether a text shares a non-template one."""

    def __init__(self, questions: list[str], n: int = 13, boilerplate_docs: int = 3, min_shared_fraction: float = 0.0):
        counts = Counter(g for q in questions for g in ngrams(q, n))
        self.n, self.min_shared_fraction = n, min_shared_fraction
        self.index = {g for g, c in counts.items() if c < boilerplate_docs}
        self.template = {g for g, c in counts.items() if c >= boilerplate_docs}
        self.boilerplate = len(self.template)

    def leaks(self, text: str) -> bool:
        """Any shared n-gram (OpenThoughts' rule), or with ``min_shared_fraction`` > 0 at least that share of
        the text's non-template n-grams: procedural questions recombine template words and numbers into
        13-grams a benchmark question happens to have, which a single shared n-gram cannot tell from a copy."""
        grams = ngrams(text, self.n) - self.template
        shared = len(grams & self.index)
        if self.min_shared_fraction <= 0:
            return shared > 0
        return shared > 0 and shared >= self.min_shared_fraction * len(grams)
