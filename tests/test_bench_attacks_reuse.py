"""benchmarks/bench_attacks.py reuses a run folder only when its warehouse holds the columns
of the spec being attacked: a folder bridged under an older spec lacks a new key, which the
suite would then silently leave unattacked (found when the seventh amendment's key was missing
from a re-run's table)."""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_attacks  # noqa: E402
from linkage.config import EncodingContract  # noqa: E402

SENT = EncodingContract.load().encoded_columns


def _warehouse(run: Path, columns: list[str]) -> None:
    (run / "hub").mkdir(parents=True)
    con = duckdb.connect(str(run / "hub" / "warehouse.duckdb"))
    cols = ", ".join(f'"{c}" VARCHAR' for c in ["record_ref", "agency", *columns])
    con.execute(f"CREATE TABLE identifiers ({cols})")
    con.close()


@pytest.fixture
def played(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []

    def fake(run: Path, people: int, seed: int) -> None:
        calls.append(run)

    import benchmarks.attacks.data as data

    monkeypatch.setattr(data, "bridge_and_ingest", fake)
    return calls


def test_a_folder_of_the_same_spec_is_reused(tmp_path: Path, played: list[Path]) -> None:
    assert "blk_initials_dob" in SENT
    _warehouse(tmp_path / "run", SENT)
    bench_attacks.prepare(tmp_path / "run", 100, 7)
    assert played == []


def test_a_folder_of_another_spec_is_played_again(tmp_path: Path, played: list[Path]) -> None:
    older = [c for c in SENT if c != "blk_initials_dob"]
    _warehouse(tmp_path / "run", older)
    bench_attacks.prepare(tmp_path / "run", 100, 7)
    assert played == [tmp_path / "run"]
    assert not (tmp_path / "run" / "hub" / "warehouse.duckdb").exists()
