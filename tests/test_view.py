"""`nt-harness view` and `nt-harness export` on a tiny real compare.

The study is real: SmolLM2 teaches and is the student (so its answers are right, wrong and missing), real
training and lm-eval scoring, about a minute and a half. Pages are checked through Starlette's test client and,
where Debian's chromium and chromium-driver are installed (.ci/run installs them), in headless Chromium: the
clicks a person makes, with the texts shown checked against the store, and a screenshot of each page
(into $NT_HARNESS_SCREENSHOTS when set; the README's come from there). Set NT_HARNESS_VIEW_STUDY (a results
folder) and NT_HARNESS_VIEW_WORKDIR (its store) to run the same clicks on another study.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import REPO
from test_e2e import PROFILE as E2E_PROFILE
from nt_harness import cli as cli_module
from nt_harness.view.app import Site, app, write_site
from nt_harness.view.data import NO_ANSWER, RIGHT, WRONG, open_studies

# test_e2e's seconds-scale profile, with SmolLM2 as the student too: its answers are right, wrong and missing
PROFILE = E2E_PROFILE.replace('student = "tiny-llama"', 'student = "smollm2"')
assert 'student = "smollm2"' in PROFILE


@pytest.fixture(scope="module")
def study(tmp_path_factory, models_dir):
    """(results folder, workdir) of a real compare of naturalthoughts and limo."""
    if os.environ.get("NT_HARNESS_VIEW_STUDY"):
        return Path(os.environ["NT_HARNESS_VIEW_STUDY"]), Path(os.environ.get("NT_HARNESS_VIEW_WORKDIR", ".nt-harness"))
    root = tmp_path_factory.mktemp("view")
    (root / "tiny.toml").write_text(PROFILE)
    env = {**os.environ, "NT_HARNESS_THREADS": "1", "HF_HUB_OFFLINE": "1", "NT_HARNESS_MODELS": str(models_dir)}
    done = subprocess.run([sys.executable, "-m", "nt_harness.cli", "compare", "naturalthoughts", "limo", "--profile",
                           "tiny.toml", "--workdir", "work", "--results", "results", "--name", "tiny", "--quiet"],
                          cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "results" / "tiny", root / "work"


@pytest.fixture(scope="module")
def site(study):
    folder, workdir = study
    return Site(open_studies([folder], workdir))


@pytest.fixture(scope="module")
def client(site):
    from starlette.testclient import TestClient

    return TestClient(app(site))


def stored(run, stage: str, name: str = "data.parquet"):
    """A stage's table straight from the store, to check what a page shows against."""
    return pq.read_table(run.entry(stage, run.result.stages[stage]) / name)


def trained_run(site):
    """The first trained row with a wrong answer (the pages and clicks need one)."""
    s = next(iter(site.studies.values()))
    for r in s.runs[1:]:
        task = next(iter(r.tasks()))
        if WRONG in r.samples(task).column("status").to_pylist():
            return s, r, task
    pytest.fail("no trained row answered anything wrong")


def test_pages_show_what_the_store_holds(site, client):
    s, r, task = trained_run(site)
    board = client.get(f"/{s.name}/index.html")
    assert board.status_code == 200 and r.result.recipe in board.text and "95% CI" in board.text
    page = client.get(f"/{s.name}/r{r.index}/index.html").text
    selection = stored(r, "select")
    kept = selection.column("kept").to_pylist()
    assert f"{kept.count(True)} kept" in page and f"{kept.count(False)} dropped" in page
    assert r.result.stages["select"] in page  # the provenance table names every stage by its key
    assert client.get(f"/{s.name}/r{r.index}/training.svg").headers["content-type"].startswith("image/svg")

    # the selection's rows, filtered and sorted on the server, against the stored selection
    reason = next(x for x, k in zip(selection.column("reason").to_pylist(), kept) if not k)
    rows = client.get(f"/api/{s.name}/r{r.index}/selection.json", params={
        "size": 100, "filter[0][field]": "reason", "filter[0][type]": "=", "filter[0][value]": reason,
        "sort[0][field]": "trace_id", "sort[0][dir]": "desc"}).json()
    want = sorted((t for t, x in zip(selection.column("trace_id").to_pylist(), selection.column("reason").to_pylist())
                   if x == reason), reverse=True)
    assert [row["trace_id"] for row in rows["data"]] == want and rows["last_row"] == len(want)

    trace_id = want[0]
    qid, _, sample = trace_id.partition("/")
    trace = client.get(f"/{s.name}/r{r.index}/trace/{qid}/{sample}.html").text
    pool = stored(r, "teacher").to_pylist()
    teacher = next(row for row in pool if row["trace_id"] == trace_id)
    assert reason in trace and _escaped(teacher["thinking"]) in trace and _escaped(teacher["question"]) in trace

    # an answer, every row's answer to its question side by side
    answers = client.get(f"/api/{s.name}/r{r.index}/eval-{task}.json", params={
        "filter[0][field]": "status", "filter[0][type]": "=", "filter[0][value]": WRONG}).json()["data"]
    assert answers and {a["status"] for a in answers} == {WRONG}
    question = client.get(f"/{s.name}/question/{task}/{answers[0]['question_id']}.html").text
    assert _escaped(answers[0]["extracted"]) in question and all(x.label in question for x in s.runs)


def test_a_status_matches_the_score(site):
    """right: the headline metric is 1; no answer: nothing extracted (counted wrong in the score); else wrong."""
    _, r, task = trained_run(site)
    for row in r.samples(task).to_pylist():
        if row["no_answer"]:
            assert row["status"] == NO_ANSWER and row["value"] == 0
        else:
            assert row["status"] == (RIGHT if row["value"] == 1 else WRONG), row


def test_unknown_pages_are_404_and_bad_filters_400(site, client):
    s, r, task = trained_run(site)
    assert client.get(f"/{s.name}/r99/index.html").status_code == 404
    assert client.get("/nosuch/index.html").status_code == 404
    assert client.get(f"/{s.name}/r{r.index}/trace/nosuch/0.html").status_code == 404
    bad = client.get(f"/api/{s.name}/r{r.index}/selection.json", params={"filter[0][field]": "nosuch"})
    assert bad.status_code == 400 and "nosuch" in bad.text


def test_static_site_holds_the_same_pages(site, tmp_path):
    s, r, task = trained_run(site)
    n = write_site(Site(site.studies), tmp_path / "site")
    base = tmp_path / "site" / s.name / f"r{r.index}"
    rows = (base / "selection.data.js").read_text()
    data = json.loads(rows.removeprefix("window.NT_ROWS = ").rstrip().rstrip(";"))
    assert sorted(d["trace_id"] for d in data) == sorted(stored(r, "select").column("trace_id").to_pylist())
    traces = list((base / "trace").rglob("*.html"))
    assert len(traces) == len(data) and n > len(traces)
    for page in (tmp_path / "site").rglob("*.html"):  # links stay inside the site: it works from disk
        text = page.read_text()
        assert not re.search(r'(href|src)="/', text), page
        assert str(tmp_path) not in text and str(REPO) not in text, page


def test_a_published_folder_without_its_store_shows_its_leaderboard_and_says_what_is_missing(tmp_path):
    from starlette.testclient import TestClient

    folder = REPO / "results" / "naturalthoughts-vs-limo"
    client = TestClient(app(Site(open_studies([folder], tmp_path / "no-store"))))
    board = client.get(f"/{folder.name}/index.html")
    assert board.status_code == 200 and "naturalthoughts" in board.text and "bars_gym_heldout.png" in board.text
    figure = client.get(f"/{folder.name}/figures/bars_gym_heldout.png")
    assert figure.content == (folder / "bars_gym_heldout.png").read_bytes()
    selection = json.loads((folder / "leaderboard.json").read_text())["runs"][1]["stages"]["select"]
    page = client.get(f"/{folder.name}/r1/selection.html")
    assert page.status_code == 200 and f"selection {selection} is not in the store" in page.text


def test_query_filters_sorts_and_pages_like_pandas():
    """The server's answer to Tabulator's request, against pandas on the same rows (string, dictionary, bool and
    int columns; ties kept in row order; nulls last)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from nt_harness.view import tables

    rng = np.random.default_rng(0)
    n = 5000
    frame = {"trace_id": [f"t{i}" for i in range(n)], "reason": rng.choice(["kept: a", "dropped: b", "dropped: c"], n),
             "kept": rng.random(n) < 0.3, "tokens": rng.integers(0, 50, n),
             "question": rng.choice(["Alpha beta", "gamma DELTA", "epsilon"], n)}
    table = pa.table(frame)
    table = table.set_column(1, "reason", pc.dictionary_encode(table.column("reason")))
    df = table.to_pandas()
    df["reason"] = df["reason"].astype(str)
    params = {"page": "3", "size": "40", "filter[0][field]": "reason", "filter[0][type]": "=",
              "filter[0][value]": "dropped: b", "filter[1][field]": "question", "filter[1][type]": "like",
              "filter[1][value]": "delta", "filter[2][field]": "kept", "filter[2][type]": "=",
              "filter[2][value]": "false",
              "sort[0][field]": "tokens", "sort[0][dir]": "desc"}
    answer = tables.query(table, params, orders={})
    want = df[(df.reason == "dropped: b") & df.question.str.contains("delta", case=False) & ~df.kept]
    want = want.sort_values("tokens", ascending=False, kind="stable")
    assert answer["last_row"] == len(want) and answer["last_page"] == -(-len(want) // 40)
    assert [r["trace_id"] for r in answer["data"]] == list(want.trace_id[80:120])
    order = pa.array(list(range(n))[::-1], pa.int64())  # a default order: the last row first
    first = tables.query(table, {"size": "5"}, order)["data"]
    assert [r["trace_id"] for r in first] == [f"t{i}" for i in range(n - 1, n - 6, -1)]


def _escaped(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


# -- exports ------------------------------------------------------------------------------------------------
def test_export_round_trips_through_datasets(site, study, tmp_path):
    datasets = pytest.importorskip("datasets")
    s, r, task = trained_run(site)
    folder, workdir = study
    args = [str(folder), "--recipe", r.result.recipe, "--budget", str(r.result.budget), "--workdir", str(workdir)]
    for what in ("selection", "pool", "eval"):
        out = CliRunner().invoke(cli_module.cli, ["export", *args[:1], str(tmp_path / what), "--what", what,
                                                  *args[1:]])
        assert out.exit_code == 0, out.output
    def load(folder):  # a cache of its own: an earlier run's dataset of the same folder name is not this one
        return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))

    selection = stored(r, "select").to_pylist()
    chosen = [x["trace_id"] for x in sorted((x for x in selection if x["kept"]), key=lambda x: x["rank"])]
    loaded = load(tmp_path / "selection")["train"]
    assert loaded["trace_id"] == chosen  # the training set, in the order the selector chose it
    pool = {x["trace_id"]: x for x in stored(r, "teacher").to_pylist()}
    assert loaded["thinking"] == [pool[t]["thinking"] for t in chosen]
    everything = load(tmp_path / "pool")["train"]
    assert sorted(everything["trace_id"]) == sorted(pool)
    assert set(everything["reason"]) == {x["reason"] for x in selection}
    answers = load(tmp_path / "eval")
    assert list(answers) == [re.sub(r"\W+", "_", t) for t in r.tasks()]
    assert answers[re.sub(r"\W+", "_", task)]["status"] == r.samples(task).column("status").to_pylist()
    card = (tmp_path / "selection" / "README.md").read_text()
    assert r.result.recipe in card and r.result.stages["select"] in card and r.result.stages["train"] in card


def test_bad_input_is_one_line(site, study, tmp_path):
    from test_bad_input import invoke, one_line

    folder, workdir = study
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = invoke("view", empty, "--workdir", workdir)
    assert code == 2 and "no leaderboard.json" in one_line(err, str(empty))
    code, err = invoke("view", "--results", empty)
    assert code == 2 and one_line(err, "no leaderboards under")
    code, err = invoke("export", folder, tmp_path / "x", "--what", "traces", "--workdir", workdir)
    assert code == 2 and one_line(err, "unknown export 'traces'", "selection, pool, eval")
    assert not (tmp_path / "x").exists()
    code, err = invoke("export", folder, tmp_path / "x", "--what", "selection", "--workdir", workdir)
    assert code == 2 and one_line(err, "more than one row", "limo")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = invoke("view", folder, "--workdir", workdir, "--port", port)
    assert code == 2 and one_line(err, f"cannot listen on 127.0.0.1:{port}", "in use")


# -- in a browser --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("Debian's chromium and chromium-driver are not installed (apt-get install chromium "
                    "chromium-driver; .ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # the flags that keep Chromium off the network this machine does not have
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=options)
    yield b
    b.quit()


@pytest.fixture(scope="module")
def served(study):
    """`nt-harness view` in its own process, on the free port it prints."""
    folder, workdir = study
    proc = subprocess.Popen([sys.executable, "-m", "nt_harness.cli", "view", str(folder), "--workdir", str(workdir)],
                            stderr=subprocess.PIPE, text=True)
    deadline, url = time.time() + 120, None
    while url is None and time.time() < deadline:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "view exited"
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        url = m and m[1]
    assert url, "no URL printed"
    yield url
    proc.terminate()
    proc.wait(30)


def test_browser_clicks_from_leaderboard_to_a_dropped_trace_and_a_wrong_answer(site, served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("NT_HARNESS_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 30)
    s, r, task = trained_run(site)

    def rows():
        return browser.find_elements(By.CSS_SELECTOR, "#rows .tabulator-row")

    def click(element):
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    browser.get(served)  # redirects to the one study's leaderboard
    link = wait.until(ready.element_to_be_clickable((By.LINK_TEXT, r.result.recipe)))
    browser.save_screenshot(str(shots / "leaderboard.png"))
    click(link)
    wait.until(ready.presence_of_element_located((By.ID, "selection-link")))
    browser.save_screenshot(str(shots / "run.png"))

    click(browser.find_element(By.ID, "selection-link"))
    wait.until(lambda b: rows())
    dropped = next(a for a in browser.find_elements(By.CSS_SELECTOR, "a.reason")
                   if a.get_attribute("data-reason").startswith("dropped"))
    reason = dropped.get_attribute("data-reason")
    click(dropped)  # filters the table on the server to that reason
    wait.until(lambda b: rows() and all(reason in row.text for row in rows()))
    browser.save_screenshot(str(shots / "selection.png"))
    trace_link = rows()[0].find_element(By.TAG_NAME, "a")
    trace_id = trace_link.text
    click(trace_link)
    shown = wait.until(ready.presence_of_element_located((By.ID, "reason"))).text
    browser.save_screenshot(str(shots / "trace.png"))
    decision = next(x for x in stored(r, "select").to_pylist() if x["trace_id"] == trace_id)
    teacher = next(x for x in stored(r, "teacher").to_pylist() if x["trace_id"] == trace_id)
    assert not decision["kept"] and shown == decision["reason"] == reason
    assert browser.find_element(By.ID, "question").text.strip() == teacher["question"].strip()

    browser.get(f"{served}{s.name}/r{r.index}/index.html")
    click(wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "a.eval-link"))))
    wait.until(lambda b: rows())
    click(browser.find_element(By.CSS_SELECTOR, f"a.status[data-status='{WRONG}']"))
    wait.until(lambda b: rows() and all(WRONG in row.text for row in rows()))
    browser.save_screenshot(str(shots / "evaluation.png"))
    click(rows()[0].find_element(By.TAG_NAME, "a"))
    card = wait.until(ready.presence_of_element_located((By.ID, f"answer-r{r.index}")))
    browser.save_screenshot(str(shots / "question.png"))
    qid = browser.current_url.rsplit("/", 1)[1].removesuffix(".html")
    answer = next(x for x in r.samples(task).to_pylist() if x["question_id"] == qid)
    assert answer["status"] == WRONG and card.find_element(By.CLASS_NAME, "status").text == WRONG
    assert card.find_element(By.CLASS_NAME, "extracted").text == answer["extracted"].strip()
    assert browser.find_element(By.ID, "target").text == answer["target"].strip()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".answer")) == len(s.runs)  # every row, side by side
