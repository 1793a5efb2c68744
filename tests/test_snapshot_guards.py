"""Safe snapshots (issue 17, item 5), end to end on real files: real bridge runs with the
agency's real keys landing sealed batches, the real hub ingest into a real DuckDB warehouse.

- the bridge refuses a snapshot whose rows are all quarantined (never forceable), one whose
  accepted rows fall below the mapping's share of the last snapshot, or whose problem rate is
  above its limit; the data officer may force the last two with a reason, which reaches the
  signed manifest, the agency's bridge_log.jsonl and the hub's IG report;
- quarantined records that still carry their record id are sent as refs only
  (present.parquet) and the hub keeps their records instead of retiring them;
- the hub holds a snapshot that would retire more than the agency's limit until an operator
  confirms it (`python -m linkage.sequence confirm-retirement`);
- a batch listing another agency's refs as "present" is refused whole.

Unlinkable rows are made by blanking every identifier but the record id and the surname: a
row the bridge must quarantine (it cannot be linked), that still names its record.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sealed_batches import hub_public, open_batch, seal_in_place, unseal_in_place
from sealed_batches import warehouse_rows as _q

from governance.reports.linkage_sections import _batches
from ig_bridge.cli import main as bridge_main
from ig_bridge.keys import KeyStore, encrypt_record_refs
from ig_bridge.manifest import MANIFEST_NAME, sha256_file, sign_manifest, write_manifest
from ig_bridge.reid_controls import read_audit
from ig_bridge.snapshot_guard import LOG_NAME, ForceReasonInvalid, SnapshotRefused
from ig_bridge.split import run_bridge
from linkage.config import HubPaths
from linkage.ingest import ingest_landing
from linkage.sequence import main as sequence_main
from linkage.snapshot_hold import confirm_retirement

ROOT = Path(__file__).resolve().parents[1]
AGENCY = "HSG"  # Parquet extract: easy to cut
MAPPING = ROOT / "schemas" / "agencies" / "hsg.yaml"
# Every subject identifier of hsg.yaml except the record id and the surname.
BLANKED = [
    "lead_title",
    "lead_forename",
    "lead_dob",
    "uprn",
    "address_line_1",
    "address_line_2",
    "postcode",
    "phone",
    "email",
]


@pytest.fixture()
def run(orchestrated_run: Path, copy_run, tmp_path: Path) -> Path:
    """Every agency's first snapshot bridged and ingested: the hub holds HSG's records."""
    run = copy_run(orchestrated_run, tmp_path / "run")
    assert not ingest_landing(HubPaths.for_run(run)).refused
    return run


def _extract(run: Path) -> pd.DataFrame:
    (path,) = sorted((run / "population" / "extracts" / AGENCY).glob("*.parquet"))
    return pd.read_parquet(path)


def _unlinkable(frame: pd.DataFrame, rows: slice | list[int]) -> pd.DataFrame:
    out = frame.copy()
    idx = out.index[rows]
    for c in BLANKED:  # object first: a None in a str column would turn it to float
        out[c] = out[c].astype(object)
        out.loc[idx, c] = None
    return out


def _write(run: Path, frame: pd.DataFrame, name: str) -> Path:
    path = run / "population" / f"{name}.parquet"
    frame.to_parquet(path, index=False)
    return path


def _bridge(run: Path, frame: pd.DataFrame, name: str, mapping: Path = MAPPING, **kw: Any):
    return run_bridge(
        _write(run, frame, name),
        mapping,
        run / "agency" / AGENCY,
        run / "landing",
        extract_kind="snapshot",
        **kw,
    )


def _count(run: Path, sql: str, params: list | None = None) -> int:
    return _q(run, sql, params)[0][0]


def _n_hsg(run: Path) -> int:
    return _count(run, "SELECT count(*) FROM identifiers WHERE agency = ?", [AGENCY])


def _landed(run: Path) -> list[Path]:
    d = run / "landing" / AGENCY
    return sorted(p for p in d.iterdir() if p.is_dir()) if d.exists() else []


def _report(run: Path) -> dict[str, Any]:
    con = duckdb.connect(str(HubPaths.for_run(run).warehouse), read_only=True)
    try:
        return _batches(con)
    finally:
        con.close()


def _refs(run: Path, local_ids: list[str]) -> list[str]:
    """The agency's own refs for its local ids (its ref key: only the agency can do this)."""
    key = KeyStore(run / "agency" / AGENCY / "keys", AGENCY).ref_key()
    return list(encrypt_record_refs(key, local_ids))


def _state_sequence(run: Path) -> int:
    return json.loads((run / "agency" / AGENCY / "state.json").read_text())[AGENCY]["sequence"]


# --------------------------------------------------------------------------- (a)


def test_all_rows_quarantined_is_refused_forced_or_not_and_the_hub_retires_nothing(
    run: Path,
) -> None:
    paths = HubPaths.for_run(run)
    full = _extract(run)
    n0, seq0 = _n_hsg(run), _state_sequence(run)
    assert n0 == len(full) > 40
    broken = _unlinkable(full, slice(None))
    with pytest.raises(SnapshotRefused) as exc:
        _bridge(run, broken, "all_bad")
    assert [b.guard for b in exc.value.breaches] == ["no_accepted_rows"]
    assert not exc.value.forceable
    assert f"all {len(full):,} rows were quarantined" in str(exc.value)
    # the data officer cannot force it either
    with pytest.raises(SnapshotRefused):
        _bridge(run, broken, "all_bad_forced", force_reason="new system go live")
    # nothing landed, no sequence number spent, the quarantine kept at the agency with reasons
    assert _landed(run) == [] and _state_sequence(run) == seq0
    q = pq.read_table(exc.value.quarantine_path).to_pylist()
    assert len(q) == len(full) and all(r["reason"] for r in q)
    report = json.loads(exc.value.report_path.read_text())
    assert report["status"] == "refused" and report["guards"][0]["guard"] == "no_accepted_rows"

    out = ingest_landing(paths)
    assert [o for o in out.outcomes if o.agency == AGENCY] == []
    assert _n_hsg(run) == n0
    assert _count(run, "SELECT count(*) FROM record_retired") == 0


# --------------------------------------------------------------------------- (b)


def test_half_quarantined_snapshot_keeps_those_records_at_the_hub(
    run: Path, tmp_path: Path
) -> None:
    paths = HubPaths.for_run(run)
    full = _extract(run)
    n0 = _n_hsg(run)
    first_batch = _q(run, "SELECT DISTINCT batch_id FROM identifiers WHERE agency = ?", [AGENCY])
    half = len(full) // 2
    snap = _unlinkable(full, slice(0, half))
    with pytest.raises(SnapshotRefused) as exc:  # 50% quarantined: above the 10% limit
        _bridge(run, snap, "half_bad")
    assert {b.guard for b in exc.value.breaches} == {"problem_rate", "min_share"}
    res = _bridge(
        run,
        snap,
        "half_bad_forced",
        force_reason="supplier export dropped names; fix due next week",
    )
    assert (res.rows_read, res.rows_accepted, res.rows_quarantined) == (
        len(full),
        len(full) - half,
        half,
    )
    assert res.present_refs == half
    assert set(res.forced["guards"]) == {"problem_rate", "min_share"}

    # The batch carries the quarantined records' refs only: three columns, no payload.
    opened = open_batch(res.landed_path, tmp_path / "opened", paths.keys)
    present = pq.read_table(opened / "present.parquet")
    assert present.column_names == ["record_ref", "agency", "batch_id"]
    want = _refs(run, full["tenancy_ref"].iloc[:half].str.strip().tolist())
    assert sorted(present.column("record_ref").to_pylist()) == sorted(want)

    (out,) = [o for o in ingest_landing(paths).outcomes if o.agency == AGENCY]
    assert out.status == "accepted", out
    # nothing retired: the quarantined half keeps its records as they were, the rest updated
    assert _n_hsg(run) == n0
    assert _count(run, "SELECT count(*) FROM record_retired") == 0
    assert (
        _count(run, "SELECT count(*) FROM identifiers WHERE batch_id = ?", [res.batch_id])
        == len(full) - half
    )
    kept = _q(
        run,
        "SELECT record_ref, batch_id FROM identifiers WHERE agency = ? AND batch_id <> ?",
        [AGENCY, res.batch_id],
    )
    assert sorted(r for r, _ in kept) == sorted(want)
    assert {(b,) for _, b in kept} == set(first_batch)
    assert (
        _count(
            run,
            "SELECT count(*) FROM payload WHERE agency = ? AND record_ref IN (SELECT unnest(?))",
            [AGENCY, want],
        )
        == half
    )
    assert _q(
        run, "SELECT present_refs, records_retired FROM batch WHERE batch_id = ?", [res.batch_id]
    ) == [(half, 0)]


# --------------------------------------------------------------------------- (c)


def test_min_share_refused_then_forced_with_reason_shown_at_the_hub(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = HubPaths.for_run(run)
    full = _extract(run)
    n0 = _n_hsg(run)
    cut = int(len(full) * 0.3)
    path = _write(run, full.iloc[cut:], "smaller")
    args = [
        "run",
        str(path),
        "--mapping",
        str(MAPPING),
        "--agency-dir",
        str(run / "agency" / AGENCY),
        "--landing",
        str(run / "landing"),
    ]

    assert bridge_main(args) == 2
    err = capsys.readouterr().err
    assert "min_share guard" in err and f"{len(full) - cut:,} rows accepted" in err
    assert f"of the {len(full):,} accepted in the last snapshot" in err
    assert "80.0%" in err and "--force --reason" in err and "nothing landed" in err
    assert _landed(run) == []
    # --force needs a reason, and a reason that looks identifying never leaves the agency
    assert bridge_main([*args, "--force"]) == 2
    assert bridge_main([*args, "--force", "--reason", "closed tenancy 12345678"]) == 2
    with pytest.raises(ForceReasonInvalid):
        run_bridge(
            path,
            MAPPING,
            run / "agency" / AGENCY,
            run / "landing",
            force_reason="ask jo@example.org",
        )
    assert _landed(run) == []

    reason = "stock transfer: 30 percent of tenancies moved to another landlord"
    capsys.readouterr()
    assert bridge_main([*args, "--force", "--reason", reason]) == 0
    assert "forced" in capsys.readouterr().err
    (landed,) = _landed(run)
    opened = open_batch(landed, run / "opened", paths.keys)
    manifest = json.loads((opened / MANIFEST_NAME).read_text())
    assert manifest["forced"]["reason"] == reason
    assert manifest["forced"]["guards"] == ["min_share"]
    assert manifest["forced"]["figures"]["min_share"]["last_accepted"] == len(full)
    log = list(read_audit(run / "agency" / AGENCY / LOG_NAME))
    assert [(e["batch_id"], e["reason"]) for e in log] == [(landed.name, reason)]

    # At the hub it would retire 30% of HSG's records: held until an operator confirms.
    (out,) = [o for o in ingest_landing(paths).outcomes if o.agency == AGENCY]
    assert (out.status, out.reason_code) == ("held", "mass_retirement")
    assert _n_hsg(run) == n0
    assert (
        confirm_retirement(
            paths, AGENCY, landed.name, "stock transfer agreed with IG", "hub operator"
        )["would_retire"]
        == cut
    )
    (out,) = [o for o in ingest_landing(paths, batch_dirs=[]).outcomes]
    assert out.status == "accepted"
    assert _n_hsg(run) == n0 - cut
    (forced,) = _report(run)["forced"]
    assert (
        forced["agency"],
        forced["batch_id"],
        forced["forced_guards"],
        forced["forced_reason"],
    ) == (AGENCY, landed.name, "min_share", reason)


# --------------------------------------------------------------------------- (d)


def test_snapshot_retiring_90_percent_is_held_until_confirmed(run: Path, tmp_path: Path) -> None:
    """An agency whose own mapping lets anything through (guards off at the bridge): the hub
    applies its own copy's limit whatever the bridge did."""
    paths = HubPaths.for_run(run)
    lax = yaml.safe_load(MAPPING.read_text())
    lax["snapshot_guards"] = {"min_share_of_last_snapshot": 0, "max_problem_rate": 1}
    lax_path = tmp_path / "hsg_lax.yaml"
    lax_path.write_text(yaml.safe_dump(lax))
    full = _extract(run)
    n0 = _n_hsg(run)
    keep = len(full) // 10
    res = _bridge(run, full.iloc[:keep], "tenth", mapping=lax_path)
    assert res.forced is None  # nothing refused at the bridge

    (out,) = [o for o in ingest_landing(paths).outcomes if o.agency == AGENCY]
    assert (out.status, out.reason_code) == ("held", "mass_retirement")
    assert f"would retire {n0 - keep:,} of the agency's {n0:,} records" in out.detail
    assert _n_hsg(run) == n0 and _count(run, "SELECT count(*) FROM record_retired") == 0
    assert _count(run, "SELECT count(*) FROM batch WHERE batch_id = ?", [res.batch_id]) == 0
    (held,) = _report(run)["held"]
    assert held["batch_id"] == res.batch_id and held["held_reason"].startswith("mass_retirement")
    (hold,) = _report(run)["retirement"]
    assert (hold["current_records"], hold["would_retire"], hold["confirmed_by"]) == (
        n0,
        n0 - keep,
        None,
    )

    # Held it stays, run after run; the agency's next batch waits behind it, in order.
    nxt = run_bridge(
        _write(run, full.iloc[:keep], "next"),
        lax_path,
        run / "agency" / AGENCY,
        run / "landing",
        extract_kind="delta",
    )
    outs = [o for o in ingest_landing(paths).outcomes if o.agency == AGENCY]
    assert [(o.batch_id, o.status, o.reason_code) for o in outs] == [
        (nxt.batch_id, "held", "sequence_gap")
    ]
    assert [h["batch_id"] for h in _report(run)["held"]] == [res.batch_id, nxt.batch_id]
    assert _n_hsg(run) == n0

    # Refused confirmations: an identifying reason, a batch not held for retirement.
    assert (
        sequence_main(
            [
                "confirm-retirement",
                str(run),
                AGENCY,
                res.batch_id,
                "--reason",
                "per email bob@example.org",
                "--by",
                "ops lead",
            ]
        )
        == 2
    )
    with pytest.raises(ValueError, match="not held for retirement"):
        confirm_retirement(paths, AGENCY, nxt.batch_id, "looks fine", "ops lead")
    assert _report(run)["retirement"][0]["confirmed_at"] is None

    assert (
        sequence_main(
            [
                "confirm-retirement",
                str(run),
                AGENCY,
                res.batch_id,
                "--reason",
                "agency confirmed the caseload closure",
                "--by",
                "ops lead",
                "--release",
            ]
        )
        == 0
    )
    assert _n_hsg(run) == keep
    assert (
        _count(run, "SELECT count(*) FROM record_retired WHERE batch_id = ?", [res.batch_id])
        == n0 - keep
    )
    assert (
        _count(
            run, "SELECT count(*) FROM batch WHERE batch_id IN (?, ?)", [res.batch_id, nxt.batch_id]
        )
        == 2
    )
    assert _report(run)["held"] == []
    (hold,) = _report(run)["retirement"]
    assert (hold["confirmed_by"], hold["confirm_reason"]) == (
        "ops lead",
        "agency confirmed the caseload closure",
    )
    assert hold["applied_at"] is not None
    with pytest.raises(ValueError, match="not held for retirement"):  # once only
        confirm_retirement(paths, AGENCY, res.batch_id, "again", "ops lead")


# --------------------------------------------------------------------------- (e)


def _forge_present(batch: Path, table: pa.Table, keys_dir: Path) -> None:
    """Replace a landed batch's present.parquet and re-sign the manifest with the agency's
    real key: a batch HSG really could send. Sealed again (the hub's key is public)."""
    unseal_in_place(batch, keys_dir)
    pq.write_table(table, batch / "present.parquet")
    body = {
        k: v for k, v in json.loads((batch / MANIFEST_NAME).read_text()).items() if k != "signature"
    }
    for name in body["files"]:
        p = batch / name
        body["files"][name] = {
            "sha256": sha256_file(p),
            "bytes": p.stat().st_size,
            "rows": pq.read_metadata(p).num_rows,
        }
    key = KeyStore(batch.parents[2] / "agency" / AGENCY / "keys", AGENCY).signing_key()
    write_manifest(batch, sign_manifest(body, key))
    seal_in_place(batch, hub_public(keys_dir))


@pytest.mark.parametrize("claim", ["other_agency", "also_updated", "extra_column"])
def test_forged_present_list_is_refused_whole(run: Path, claim: str) -> None:
    paths = HubPaths.for_run(run)
    full = _extract(run)
    n0 = _n_hsg(run)
    gp = _q(run, "SELECT record_ref FROM identifiers WHERE agency = 'GP' LIMIT 25")
    n_gp = _count(run, "SELECT count(*) FROM identifiers WHERE agency = 'GP'")
    # A genuine snapshot without 5 tenancies (they would retire), then its present list forged.
    res = _bridge(run, full.iloc[5:], "snap")
    batch = res.landed_path
    if claim == "other_agency":  # keep GP's records "present" in HSG's name
        refs = [r for (r,) in gp]
    else:
        refs = _refs(run, full["tenancy_ref"].iloc[5:8].str.strip().tolist())
    cols = {
        "record_ref": refs,
        "agency": [AGENCY] * len(refs),
        "batch_id": [batch.name] * len(refs),
    }
    if claim == "extra_column":  # smuggling a payload field through the refs-only file
        cols["record_ref"] = _refs(run, full["tenancy_ref"].iloc[:3].str.strip().tolist())
        cols["case_notes"] = ["x"] * 3
    _forge_present(batch, pa.table(cols), paths.keys)

    (out,) = [o for o in ingest_landing(paths).outcomes if o.agency == AGENCY]
    want = {
        "other_agency": "ref_of_another_agency",
        "also_updated": "present_ref_also_updated",
        "extra_column": "column_not_in_agreement",
    }[claim]
    assert (out.status, out.reason_code) == ("refused", want), out
    assert _n_hsg(run) == n0 and _count(run, "SELECT count(*) FROM record_retired") == 0
    assert _count(run, "SELECT count(*) FROM identifiers WHERE agency = 'GP'") == n_gp
    assert _count(run, "SELECT count(*) FROM identifiers WHERE batch_id = ?", [batch.name]) == 0
    refusal = json.loads((paths.refused / AGENCY / batch.name / "refusal.json").read_text())
    assert refusal["reason_code"] == want
    assert not any(r in json.dumps(refusal) for r in refs)  # counts, never refs
