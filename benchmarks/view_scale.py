"""`nt-harness view` on a 10^6-trace selection: first paint and filters, against pandas on the same files.

Writes a synthetic study in the store's real layout (a pool of 1M traces with their questions and
thinking, three annotations, a selection of 100k with reasons), starts the real `nt-harness view` in its
own process, and measures, each as a median over repeats:

- the selection page's HTML, and its first page of rows (the server builds the table on the first ask: that
  one is reported on its own, cold);
- a filter (reason = one value, sorted by thinking tokens) and a text search in the questions;
- in headless Chromium when Debian's chromium and chromium-driver are installed: from navigation to the first
  rows drawn (the first paint a person sees), and from typing a filter to the filtered rows drawn.

The anchor is what a researcher does today: pandas reading the same Parquet files (only the columns
needed), merging on trace_id, and the same filter, sort and head(50). Goals: first paint < 1 s,
a filter < 300 ms.

    python benchmarks/view_scale.py                  # 1M traces
    python benchmarks/view_scale.py --traces 100000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REASONS = ["kept: models disagree", "dropped: not chosen", "dropped: incomplete", "dropped: models agree",
           "dropped: wrong answer", "dropped: too long"]
TOPICS = ["Science", "Engineering", "Medicine", "Economics", "Management", "Law", "Philosophy", "History",
          "Education", "Literature and Arts", "Agronomy", "Sociology", "Military Science"]
WORDS = np.array("the of a to is in that we it this for as with be by are on at an so if then thus".split()
                 + [f"x{i}" for i in range(200)])


def text(rng, n: int, words: int) -> pa.Array:
    """n strings of about ``words`` words: long enough to weigh what real texts weigh."""
    picks = WORDS[rng.integers(0, len(WORDS), (n, words))]
    return pa.array([" ".join(row) for row in picks])


def write_study(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    per_question = 4
    nq = n // per_question
    q = np.arange(n) // per_question
    qids = np.array([f"{i:016x}" for i in range(nq)])
    trace_ids = pa.array([f"{a}/{b}" for a, b in zip(qids[q], np.arange(n) % per_question)])
    questions = text(rng, nq, 40)
    store = root / "work" / "store"
    keys = {"teacher": "t" * 20, "select": "s" * 20, "annotate": ["a" * 20, "b" * 20, "c" * 20]}

    def entry(stage, component, key, table):
        path = store / stage / f"{component}-{key}"
        path.mkdir(parents=True)
        pq.write_table(table, path / "data.parquet")
        (path / "manifest.json").write_text(json.dumps({"stage": stage, "key": key, "component": component,
                                                        "version": "1", "settings": {}, "wall_s": 0.0}))

    entry("teacher", "synthetic", keys["teacher"], pa.table({
        "question_id": pa.array(qids).take(pa.array(q)), "source": pa.array(["synthetic"] * n),
        "question": questions.take(pa.array(q)), "reference": pa.array(["42"] * n),
        "topic": pa.array(TOPICS).take(pa.array(rng.integers(0, len(TOPICS), nq)[q])),
        "metadata": pa.array(["{}"] * n), "trace_id": trace_ids, "teacher": pa.array(["r1"] * n),
        "sample": pa.array(np.arange(n) % per_question, pa.int32()), "thinking": text(rng, n, 60),
        "answer": pa.array(["42"] * n), "complete": rng.random(n) < 0.95,
        "finish_reason": pa.array(["stop"] * n), "prompt_tokens": pa.array(np.full(n, 80), pa.int32()),
        "completion_tokens": pa.array(rng.integers(100, 16000, n), pa.int32())}))
    entry("annotate", "length", keys["annotate"][0], pa.table({
        "trace_id": trace_ids, "thinking_tokens": pa.array(rng.integers(50, 16000, n), pa.int32())}))
    entry("annotate", "verify", keys["annotate"][1], pa.table({
        "trace_id": trace_ids, "correct": rng.random(n) < 0.6}))
    entry("annotate", "judge", keys["annotate"][2], pa.table({
        "trace_id": trace_ids, "models_agree": (rng.random(n) < 0.5).astype(np.float64)}))
    reason = rng.choice(len(REASONS), n, p=[0.1, 0.5, 0.1, 0.15, 0.1, 0.05])
    kept = reason == 0
    rank = np.full(n, -1)
    rank[kept] = rng.permutation(int(kept.sum()))
    entry("select", "disagree", keys["select"], pa.table({
        "trace_id": trace_ids, "kept": kept, "reason": pa.array(REASONS).take(pa.array(reason)),
        "rank": pa.array(rank, pa.int32())}))
    folder = root / "results" / "scale"
    folder.mkdir(parents=True)
    result = {"benchmark": "lmeval", "task": "t", "metric": "exact_match", "filter": "none", "value": 0.5,
              "stderr": 0.01, "n": 100, "higher_is_better": True, "headline": None}
    (folder / "leaderboard.json").write_text(json.dumps({"title": "scale", "created": "", "runs": [
        {"recipe": "synthetic", "budget": int(kept.sum()), "student": "s", "results": [result], "stages": keys}]}))
    return folder


def pandas_anchor(root: Path, reason: str) -> tuple[float, float]:
    """(read + merge, filter + sort + head) seconds: the same table built and queried with pandas."""
    store = root / "work" / "store"
    started = time.perf_counter()
    sel = pd.read_parquet(next((store / "select").glob("*/data.parquet")))
    pool = pd.read_parquet(next((store / "teacher").glob("*/data.parquet")),
                           columns=["trace_id", "question_id", "topic", "question", "complete", "completion_tokens"])
    pool["question"] = pool["question"].str.slice(0, 160)
    table = sel.merge(pool, on="trace_id", how="left")
    for path in (store / "annotate").glob("*/data.parquet"):
        table = table.merge(pd.read_parquet(path), on="trace_id", how="left")
    built = time.perf_counter() - started
    times = []
    for _ in range(5):
        started = time.perf_counter()
        table[table["reason"] == reason].sort_values("thinking_tokens", ascending=False).head(50)
        times.append(time.perf_counter() - started)
    return built, statistics.median(times)


def timed(get, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = get()
        times.append(time.perf_counter() - started)
        response.raise_for_status()
    return statistics.median(times)


def browser_times(url: str, repeats: int) -> tuple[float, float] | None:
    """(navigation to first rows drawn, filter typed to rows drawn) medians in Chromium, or None without it."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    paints, filters = [], []
    try:
        for i in range(repeats):
            browser.get("about:blank")
            started = time.perf_counter()
            browser.get(url)
            browser.execute_async_script(
                "var done = arguments[0]; (function poll() { document.body.dataset.rowsLoaded ? done() :"
                " setTimeout(poll, 5); })();")
            paints.append(time.perf_counter() - started)
            filters.append(browser.execute_async_script(
                "var done = arguments[0], t0 = performance.now();"
                "table.on('dataProcessed', function () { done((performance.now() - t0) / 1000); });"
                f"table.setHeaderFilterValue('reason', {json.dumps(REASONS[2 + i % 3])});"))
    finally:
        browser.quit()
    return statistics.median(paints), statistics.median(filters)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nt-view-scale-"))
    try:
        started = time.perf_counter()
        folder = write_study(root, args.traces)
        size = sum(p.stat().st_size for p in (root / "work").rglob("*.parquet"))
        print(f"study: {args.traces:,} traces, {size / 1e6:,.0f} MB of Parquet, written in "
              f"{time.perf_counter() - started:.1f} s")
        server = subprocess.Popen([sys.executable, "-m", "nt_harness.cli", "view", str(folder), "--workdir",
                                   str(root / "work")], stderr=subprocess.PIPE, text=True)
        try:
            url = None
            while url is None:
                line = server.stderr.readline()
                if not line and server.poll() is not None:
                    raise SystemExit("nt-harness view exited")
                m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
                url = m and m[1]
            measure(url, root, args)
        finally:
            server.terminate()
            server.wait(30)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure(url: str, root: Path, args) -> None:
    client = httpx.Client(base_url=url, timeout=120)
    api = "api/scale/r0/selection.json"
    started = time.perf_counter()
    client.get(api, params={"size": 50}).raise_for_status()
    cold = time.perf_counter() - started
    page = timed(lambda: client.get("scale/r0/selection.html"), args.repeats)
    first = timed(lambda: client.get(api, params={"size": 50}), args.repeats)
    reasons = iter(REASONS * args.repeats)
    filtered = timed(lambda: client.get(api, params={
        "size": 50, "filter[0][field]": "reason", "filter[0][type]": "=", "filter[0][value]": next(reasons),
        "sort[0][field]": "thinking_tokens", "sort[0][dir]": "desc"}), args.repeats)
    words = iter(f"x{i} x{i + 1}" for i in range(1000))
    search = timed(lambda: client.get(api, params={
        "size": 50, "filter[0][field]": "question", "filter[0][type]": "like", "filter[0][value]": next(words)}),
        args.repeats)
    built, anchor = pandas_anchor(root, REASONS[1])
    print(f"first ask (the server reads and joins the tables): {cold:.2f} s   pandas read + merge: {built:.2f} s "
          f"(ratio {cold / built:.2f})")
    print(f"selection page HTML: {page * 1000:.0f} ms; first 50 rows: {first * 1000:.0f} ms")
    print(f"filter reason + sort by thinking tokens, 50 rows: {filtered * 1000:.0f} ms   pandas same query: "
          f"{anchor * 1000:.0f} ms (ratio {filtered / anchor:.2f})")
    print(f"text search in the questions, 50 rows: {search * 1000:.0f} ms")
    chromium = browser_times(f"{url}scale/r0/selection.html", args.repeats)
    if chromium is None:
        print("chromium: not installed (apt-get install chromium chromium-driver), no browser timings")
    else:
        print(f"chromium: navigation to first rows drawn {chromium[0] * 1000:.0f} ms (goal < 1000); "
              f"filter typed to rows drawn {chromium[1] * 1000:.0f} ms (goal < 300)")


if __name__ == "__main__":
    main()
