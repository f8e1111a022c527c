"""The core: plugin loading and isolation, recipe merging, the stage store (the CLI's error messages: test_bad_input)."""

import json
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

import nt_harness
from nt_harness.components import KINDS, Selector
from nt_harness.plugins import PluginError, Plugins
from nt_harness.recipes import SpecError, apply_sets, merge, recipe_from_file
from nt_harness.store import Store, StoreLocked, write_table

CLI = [sys.executable, "-m", "nt_harness.cli"]


def test_first_party_plugins_register_every_kind():
    pm = Plugins()
    assert pm.errors == []
    for kind in KINDS:
        assert pm.components[kind], f"no {kind} registered"
    assert {"random", "naturalthoughts", "limo"} <= set(pm.recipes)
    assert "embedded" in pm.profiles
    assert {"smollm2", "tiny-llama"} <= set(pm.models)


class Raises:
    @nt_harness.hookimpl
    def register_selectors(self, register):
        raise RuntimeError("boom")


class Misspelt:
    @nt_harness.hookimpl
    def register_selector(self, register):  # no such hook
        pass


def test_a_plugin_that_raises_is_named_and_the_others_keep_working():
    pm = Plugins(extra=[Raises()])
    assert any("raised in register_selectors" in e and "boom" in e for e in pm.errors)
    assert "random" in pm.components["selector"]


def test_a_misspelt_hook_is_named_and_dropped():
    pm = Plugins(extra=[Misspelt()])
    assert any("register_selector" in e for e in pm.errors)
    assert "random" in pm.components["selector"]


def test_duplicate_component_names_are_reported_not_overwritten():
    from nt_modelfree.selectors import RandomSelector

    class Dup:
        @nt_harness.hookimpl
        def register_selectors(self, register):
            register(type("Other", (Selector,), {"name": RandomSelector.name}))

    pm = Plugins(extra=[Dup()])
    assert pm.components["selector"]["random"] is RandomSelector
    assert any("already registered" in e for e in pm.errors)


def test_load_and_disable_plugins_by_env(monkeypatch):
    monkeypatch.setenv("NT_HARNESS_LOAD_PLUGINS", "modelfree,limo")
    assert set(Plugins().info) == {"modelfree", "limo"}
    monkeypatch.delenv("NT_HARNESS_LOAD_PLUGINS")
    monkeypatch.setenv("NT_HARNESS_DISABLE_PLUGINS", "limo")
    pm = Plugins()
    assert "limo" not in pm.info and "limo" not in pm.recipes and "random" in pm.recipes


def test_unknown_names_list_what_exists():
    pm = Plugins()
    with pytest.raises(PluginError, match=r"unknown selector 'nope'; available: .*random"):
        pm.component("selector", "nope")


def test_a_plugin_that_fails_to_import_is_named(tmp_path):
    """A real distribution on sys.path whose entry point names a module that raises on import."""
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[nt_harness]\nbroken = broken_plugin\n")
    out = subprocess.run(CLI + ["plugins", "--json"], capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert any("'broken'" in e and "broken-plugin" in e and "missing dependency xyz" in e for e in report["errors"])
    assert any(p["name"] == "modelfree" for p in report["plugins"])


def test_merge_refines_the_same_component_and_replaces_another():
    base = {"trainer": {"name": "sft", "lr": 1.0, "epochs": 2}, "annotators": [{"name": "length"}]}
    out = merge(base, {"trainer": {"lr": 2.0}, "annotators": [{"name": "verify"}]})
    assert out["trainer"] == {"name": "sft", "lr": 2.0, "epochs": 2}
    assert [a["name"] for a in out["annotators"]] == ["length", "verify"]
    assert merge(base, {"trainer": {"name": "other"}})["trainer"] == {"name": "other"}
    assert base["trainer"]["lr"] == 1.0  # inputs are not mutated


def test_set_overrides_parse_values_and_name_bad_keys():
    spec = {"trainer": {"name": "sft"}, "benchmarks": [{"name": "lmeval"}], "budget": 4}
    out = apply_sets(spec, ["trainer.lr=1e-5", "benchmarks.lmeval.limit=8", "budget=32", "trainer.schedule=cosine"])
    assert out["trainer"]["lr"] == 1e-5 and out["benchmarks"][0]["limit"] == 8 and out["budget"] == 32
    assert out["trainer"]["schedule"] == "cosine"
    with pytest.raises(SpecError, match="unknown section 'trainr'"):
        apply_sets(spec, ["trainr.lr=1"])
    with pytest.raises(SpecError, match="no benchmark 'nope'"):
        apply_sets(spec, ["benchmarks.nope.limit=1"])


def test_recipe_files_name_the_file_and_key(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text('description = "x"\n[selector]\nname = "random"\n')
    assert recipe_from_file(good).spec == {"selector": {"name": "random"}}
    bad = tmp_path / "bad.yaml"
    bad.write_text("selectr: {name: random}\n")
    with pytest.raises(SpecError, match=r"bad.yaml: unknown key 'selectr'"):
        recipe_from_file(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("[selector\n")
    with pytest.raises(SpecError, match="broken.toml"):
        recipe_from_file(broken)


def test_store_writes_atomically_and_keeps_nothing_half_written(tmp_path):
    store = Store(tmp_path)
    key = store.key("select", "random", "1", {"a": 1}, {"pool": "p"})
    assert key == store.key("select", "random", "1", {"a": 1}, {"pool": "p"})
    assert key != store.key("select", "random", "2", {"a": 1}, {"pool": "p"})
    with pytest.raises(RuntimeError):
        with store.writing("select", "random", key, {}) as out:
            (out / "data.parquet").write_text("partial")
            raise RuntimeError("killed")
    assert store.get("select", "random", key) is None
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "store" / "select").iterdir())
    with store.writing("select", "random", key, {"settings": {"a": 1}}) as out:
        write_table(pa.table({"x": [1]}), out)
    entry = store.get("select", "random", key)
    assert entry.table().column("x").to_pylist() == [1]
    assert entry.manifest["settings"] == {"a": 1} and "wall_s" in entry.manifest and "versions" in entry.manifest


def test_two_runs_cannot_share_a_store_at_once(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from nt_harness.store import Store
        with Store({str(tmp_path)!r}).locked():
            print("locked", flush=True)
            time.sleep(30)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLocked, match="another nt-harness run"):
            with Store(tmp_path).locked():
                pass
    finally:
        holder.kill()
        holder.wait()
    with Store(tmp_path).locked():  # released when the holder dies
        pass
