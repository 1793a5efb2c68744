"""Sequence gaps and re-keying batches, attacked end to end (issue #15).

A gap in an agency's batch sequence (a batch delayed, or withheld by whoever can reach the
landing zone) used to go unnoticed: the later batch loaded, and the late one was then refused
as a replay and lost. Now the later batch is held, verified, in hub-private storage until the
gap is filled (then both load in order) or an operator records the number as abandoned.
Re-keying batches share the counter and the refusal rules. Real bridged batches and keys
(`orchestrated_run`), real DuckDB warehouse. Forged re-keying batches are signed with the
agency's real key and sealed to the hub's public key (tests/sealed_batches.py), as anyone
can, so each goes through custody -> verify -> apply.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sealed_batches import seal_landing
from sealed_batches import warehouse_rows as _q

from governance.reports.linkage_sections import _batches
from ig_bridge.keys import KeyStore
from ig_bridge.manifest import MANIFEST_NAME, sign_manifest
from ig_bridge.split import run_bridge
from linkage.config import HubPaths
from linkage.ingest import ingest_landing
from linkage.rekey import (
    REKEY_FILE,
    apply_pending_rekeys,
    apply_rekey,
    rekey_incoming,
    rekey_landing,
)
from linkage.sequence import abandon_sequence, main

ROOT = Path(__file__).resolve().parents[1]
AGENCY = "HSG"


@pytest.fixture()
def run(orchestrated_run: Path, copy_run, tmp_path: Path) -> Path:
    run = copy_run(orchestrated_run, tmp_path / "run")
    assert not ingest_landing(HubPaths.for_run(run)).refused  # every agency at sequence 1
    return run


def _delta(run: Path, phone: str, name: str) -> Path:
    """HSG's real bridge run on 5 changed tenancies: the agency's next signed delta."""
    (src,) = sorted((run / "population" / "extracts" / AGENCY).glob("*.parquet"))
    frame = pd.read_parquet(src).iloc[:5].copy()
    frame["phone"] = phone
    path = run / "population" / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    res = run_bridge(
        path,
        ROOT / "schemas" / "agencies" / "hsg.yaml",
        run / "agency" / AGENCY,
        run / "landing",
        extract_kind="delta",
    )
    assert res.landed_path is not None
    return res.landed_path


def _report(run: Path) -> dict[str, Any]:
    con = duckdb.connect(str(HubPaths.for_run(run).warehouse), read_only=True)
    try:
        return _batches(con)
    finally:
        con.close()


def test_gap_holds_the_later_batch_then_both_load_in_order(run: Path, tmp_path: Path) -> None:
    paths = HubPaths.for_run(run)
    d2, d3 = _delta(run, "07700 900111", "d2"), _delta(run, "07700 900222", "d3")
    delayed = tmp_path / "delayed"
    shutil.move(str(d2), str(delayed))  # sequence 2 is late

    (out,) = ingest_landing(paths).outcomes
    assert (out.batch_id, out.status, out.reason_code) == (d3.name, "held", "sequence_gap")
    assert "waits for 2" in out.detail
    held = paths.held / AGENCY / d3.name
    assert held.is_dir() and not d3.exists()
    assert _q(run, "SELECT count(*) FROM identifiers WHERE batch_id = ?", [d3.name]) == [(0,)]
    assert _q(run, "SELECT count(*) FROM batch WHERE batch_id = ?", [d3.name]) == [(0,)]
    rows = _report(run)["held"]
    assert [(h["agency"], h["sequence"], h["waiting_for"]) for h in rows] == [(AGENCY, 3, 2)]
    assert ingest_landing(paths).outcomes == []  # still waiting, listed once
    assert len(_report(run)["held"]) == 1

    shutil.move(str(delayed), str(d2))  # the late batch arrives
    report = ingest_landing(paths)
    assert [(o.batch_id, o.status) for o in report.outcomes] == [
        (d2.name, "accepted"),
        (d3.name, "accepted"),
    ]
    assert _q(
        run, "SELECT sequence FROM batch WHERE agency = ? ORDER BY ingested_at", [AGENCY]
    ) == [(1,), (2,), (3,)]
    # Loaded in order: the records hold sequence 3's phone token, not 2's.
    want = pq.read_table(
        paths.ingested / AGENCY / d3.name / "identifiers.parquet",
        columns=["record_ref", "tok_phone"],
    ).to_pylist()
    for r in want:
        assert _q(
            run,
            "SELECT tok_phone, batch_id FROM identifiers WHERE agency = ? AND record_ref = ?",
            [AGENCY, r["record_ref"]],
        ) == [(r["tok_phone"], d3.name)]
    assert _report(run)["held"] == [] and not any(paths.held.rglob("*.parquet"))


def test_operator_abandons_a_lost_number_and_the_held_batch_loads(
    run: Path, tmp_path: Path
) -> None:
    paths = HubPaths.for_run(run)
    d2, d3 = _delta(run, "07700 900111", "d2"), _delta(run, "07700 900222", "d3")
    keep = tmp_path / "replayed-later"
    shutil.copytree(d2, keep)
    shutil.rmtree(d2)  # signed, never landed (the bridge host was lost)
    assert [o.status for o in ingest_landing(paths).outcomes] == ["held"]

    # Refused: an identifying reason, a number already spent, a number a held batch carries.
    assert (
        main(
            [
                "abandon",
                str(run),
                AGENCY,
                "2",
                "--reason",
                "child born 01/02/2015",
                "--by",
                "ops lead",
            ]
        )
        == 2
    )
    with pytest.raises(ValueError, match="already spent"):
        abandon_sequence(paths, AGENCY, 1, "bridge host lost", "ops lead")
    with pytest.raises(ValueError, match="is held"):
        abandon_sequence(paths, AGENCY, 3, "bridge host lost", "ops lead")
    assert _q(run, "SELECT count(*) FROM sequence_abandoned") == [(0,)]

    assert (
        main(
            [
                "abandon",
                str(run),
                AGENCY,
                "2",
                "--reason",
                "bridge host lost after signing",
                "--by",
                "ops lead",
                "--release",
            ]
        )
        == 0
    )
    assert _q(run, "SELECT count(*) FROM batch WHERE batch_id = ?", [d3.name]) == [(1,)]
    assert _report(run)["held"] == []
    assert [(a["agency"], a["sequence"]) for a in _report(run)["abandoned"]] == [(AGENCY, 2)]

    # The abandoned batch turning up afterwards is a replay: refused, nothing of it loaded.
    late = paths.landing / AGENCY / d2.name
    shutil.copytree(keep, late)
    (out,) = ingest_landing(paths, batch_dirs=[late]).outcomes
    assert (out.status, out.reason_code) == ("refused", "replay")
    assert _q(run, "SELECT count(*) FROM identifiers WHERE batch_id = ?", [d2.name]) == [(0,)]


# ------------------------------------------------------------------------ re-keying batches


def _rekey_batch(
    run: Path,
    agency: str,
    seq: int,
    mapping: pa.Table,
    tweak: Any = None,
    *,
    hub_private: bool = False,
) -> Path:
    """A re-keying batch as the agency's bridge lands it, signed with its real key and sealed
    to the hub; or (`hub_private`) in plaintext where custody would have unsealed it."""
    paths = HubPaths.for_run(run)
    batch_id = f"{agency}-{seq:06d}-20990101T000000Z-rekey-test{seq}"
    d = (rekey_incoming(paths) if hub_private else rekey_landing(paths)) / agency / batch_id
    d.mkdir(parents=True)
    pq.write_table(mapping, d / REKEY_FILE)
    data = (d / REKEY_FILE).read_bytes()
    n = mapping.num_rows
    body: dict[str, Any] = {
        "batch_id": batch_id,
        "agency": agency,
        "sequence": seq,
        "extract_kind": "rekey",
        "created_at": "2099-01-01T00:00:00+00:00",
        "mapping_version": 0,
        "canonical_version": 0,
        "encoding_spec_version": 0,
        "link_key_version": 1,
        "ref_key_version": 2,
        "signing_key_id": f"{agency}-ed25519-v1",
        "rekey": {"from_ref_key_versions": [1], "to_ref_key_version": 2},
        "rows": {"read": n, "accepted": n, "quarantined": 0},
        "files": {
            REKEY_FILE: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "rows": n}
        },
    }
    if tweak is not None:
        tweak(d, body)
    key = KeyStore(run / "agency" / agency / "keys", agency).signing_key()
    (d / MANIFEST_NAME).write_bytes(json.dumps(sign_manifest(body, key)).encode())
    if not hub_private:
        seal_landing(rekey_landing(paths), paths.keys)
    return d


def _refs(run: Path, agency: str, n: int = 3) -> list[str]:
    return [
        r
        for (r,) in _q(
            run,
            "SELECT record_ref FROM identifiers WHERE agency = ? ORDER BY record_ref LIMIT ?",
            [agency, n],
        )
    ]


def _mapping(old: list[str]) -> pa.Table:
    return pa.table({"old_ref": old, "new_ref": [f"new-{i}-{r[:8]}" for i, r in enumerate(old)]})


def test_rekey_malformed_or_foreign_refused_and_the_queue_goes_on(run: Path) -> None:
    paths = HubPaths.for_run(run)
    all_refs = sorted(_q(run, "SELECT agency, record_ref FROM identifiers"))
    gp_rows = _q(run, "SELECT * FROM identifiers WHERE agency = 'GP' ORDER BY record_ref")

    def not_an_object(d: Path, body: dict[str, Any]) -> None:
        body["files"][REKEY_FILE] = ["not", "an", "object"]

    def listed_dir(d: Path, body: dict[str, Any]) -> None:
        (d / REKEY_FILE).unlink()
        (d / REKEY_FILE).mkdir()

    bad = {
        "CSC": _rekey_batch(run, "CSC", 2, _mapping(_refs(run, "CSC")), not_an_object),
        "EH": _rekey_batch(run, "EH", 2, _mapping(_refs(run, "EH")), listed_dir),
        # HSG's key, GP's refs: would move GP's records to refs only HSG controls
        "HSG": _rekey_batch(run, "HSG", 2, _mapping(_refs(run, "GP"))),
        "POL": _rekey_batch(run, "POL", 2, pa.table({"old_ref": [1, 2], "new_ref": [3, 4]})),
    }
    good = _rekey_batch(run, "SCH", 2, _mapping(_refs(run, "SCH")))
    outcomes = {o.agency: o for o in apply_pending_rekeys(paths)}
    assert {a: (o.status, o.reason_code) for a, o in outcomes.items()} == {
        # a folder in a landed batch: refused by custody, before verify
        "CSC": ("refused", "manifest_invalid"),
        "EH": ("refused", "unexpected_file"),
        "HSG": ("refused", "contract_violation"),
        "POL": ("refused", "contract_violation"),
        "SCH": ("applied", None),
    }
    assert not good.exists()
    assert _q(run, "SELECT * FROM identifiers WHERE agency = 'GP' ORDER BY record_ref") == gp_rows
    after = sorted(_q(run, "SELECT agency, record_ref FROM identifiers"))
    moved = {r for a, r in all_refs if a == "SCH"} - {r for a, r in after if a == "SCH"}
    assert len(moved) == 3 and [x for x in all_refs if x[0] != "SCH"] == [
        x for x in after if x[0] != "SCH"
    ]
    # Listed for the IG report; only the manifest and the reason kept.
    for agency, b in bad.items():
        assert _q(
            run, "SELECT reason_code FROM refused_batch WHERE batch_folder = ?", [b.name]
        ) == [(outcomes[agency].reason_code,)]
        kept = paths.refused / agency / b.name
        at_custody = agency == "EH"  # nothing was opened: nothing but the reason is kept
        assert sorted(p.name for p in kept.iterdir()) == (
            ["refusal.json"] if at_custody else [MANIFEST_NAME, "refusal.json"]
        )

    # Defence in depth: the listed folder met by verify in hub custody is refused there too.
    private = _rekey_batch(run, "EH", 3, _mapping(_refs(run, "EH")), listed_dir, hub_private=True)
    out = apply_rekey(paths, private)
    assert (out.status, out.reason_code) == ("refused", "not_a_file")
    assert not private.exists()
    assert sorted(p.name for p in (paths.refused / "EH" / private.name).iterdir()) == [
        MANIFEST_NAME,
        "refusal.json",
    ]
    assert _q(
        run, "SELECT reason_code FROM refused_batch WHERE batch_folder = ?", [private.name]
    ) == [("not_a_file",)]
    assert _q(run, "SELECT * FROM identifiers WHERE agency = 'GP' ORDER BY record_ref") == gp_rows


def test_rekey_ahead_of_a_missing_delta_is_held_then_applied_in_order(
    run: Path, tmp_path: Path
) -> None:
    """Extract and re-keying batches share HSG's counter: re-keying 3 lands (and the hub
    applies re-keying first) while delta 2 is still on its way."""
    paths = HubPaths.for_run(run)
    d2 = _delta(run, "07700 900111", "d2")
    delayed = tmp_path / "d2"
    shutil.move(str(d2), str(delayed))
    old = _refs(run, AGENCY)
    rk = _rekey_batch(run, AGENCY, 3, _mapping(old))
    (out,) = apply_pending_rekeys(paths)
    assert (out.status, out.reason_code) == ("held", "sequence_gap")
    assert (paths.held / AGENCY / rk.name).is_dir()
    assert _q(run, "SELECT count(*) FROM identifiers WHERE record_ref IN (?, ?, ?)", old) == [(3,)]
    shutil.move(str(delayed), str(d2))
    report = ingest_landing(paths)
    assert [(o.batch_id, o.status) for o in report.outcomes] == [
        (d2.name, "accepted"),
        (rk.name, "applied"),
    ]
    assert _q(run, "SELECT count(*) FROM identifiers WHERE record_ref IN (?, ?, ?)", old) == [(0,)]
    assert _q(
        run,
        "SELECT sequence, extract_kind FROM batch WHERE agency = ? AND sequence > 1 ORDER BY 1",
        [AGENCY],
    ) == [(2, "delta"), (3, "rekey")]
