"""Mass retirement: the hub holds a snapshot that would retire too many of an agency's records.

A snapshot is the agency's whole current picture, so records it does not carry (neither
updated in identifiers.parquet nor listed as present-but-quarantined in present.parquet) retire.
A broken extract (a wrong mapping, a truncated export) that slipped past the bridge's guards
(ig_bridge.snapshot_guard) would retire most of an agency's records, and every child among
them would disappear from every partner's view. So a snapshot that would retire more than the
agency's `snapshot_guards.max_retire_share` (its mapping at the hub; default 20%) of the
records the hub holds for it is not applied: it is held (hub/held/, `held_batch` with
held_reason, `retirement_hold` with the figures, both in the IG report), later batches of the
agency wait behind it, and it applies at the next ingest once an operator confirms it:

    python -m linkage.sequence confirm-retirement RUN_DIR AGENCY BATCH_ID --reason ... --by ...

The confirmation (who, why, when) is kept in `retirement_hold`, bound to the batch's manifest
hash; a batch that is not held for retirement cannot be confirmed. An operator who decides the
snapshot is wrong abandons its sequence number instead (`python -m linkage.sequence abandon`)
and asks the agency for a good one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from ig_bridge.manifest import VerifiedManifest
from linkage.config import HubPaths, private_umask
from linkage.sequence import check_operator_text
from linkage.warehouse import ensure_batch_tables

log = logging.getLogger(__name__)

REASON_CODE = "mass_retirement"


class RetirementHeld(Exception):  # noqa: N818 - an outcome, like BatchRefused
    """The snapshot would retire more than the limit and is not confirmed: hold it."""

    def __init__(self, current: int, would_retire: int, limit: float) -> None:
        self.current, self.would_retire, self.limit = current, would_retire, limit
        share = would_retire / current if current else 0.0
        self.detail = (
            f"would retire {would_retire:,} of the agency's {current:,} records "
            f"({share:.1%}), above its limit snapshot_guards.max_retire_share = "
            f"{limit:.1%}; confirm with `python -m linkage.sequence "
            "confirm-retirement` or abandon its sequence number"
        )
        super().__init__(self.detail)


def would_retire(con: duckdb.DuckDBPyConnection, agency: str) -> tuple[int, int]:
    """(records the hub holds for `agency`, how many the staged snapshot would retire): those
    in neither the staged identifiers (_new_ident) nor the present refs (_new_present)."""
    current, gone = con.execute(
        """
        SELECT count(*), count(*) FILTER (
            NOT EXISTS (SELECT 1 FROM _new_ident n WHERE n.record_ref = x.record_ref)
            AND NOT EXISTS (SELECT 1 FROM _new_present p WHERE p.record_ref = x.record_ref))
        FROM identifiers x WHERE agency = ?""",
        [agency],
    ).fetchall()[0]
    return int(current), int(gone)


def check(con: duckdb.DuckDBPyConnection, vm: VerifiedManifest, sha: str, limit: float) -> int:
    """Inside the load transaction, on the staged snapshot: the number of records it retires.
    Raises RetirementHeld when that is above `limit` of the agency's records and no operator
    confirmed this very batch (same manifest). The caller rolls back and records the hold
    (`record_hold`) outside the transaction, so the figures are not rolled back with it."""
    current, gone = would_retire(con, vm.agency)
    if current and gone / current > limit and not _confirmed(con, vm, sha):
        raise RetirementHeld(current, gone, limit)
    return gone


def _confirmed(con: duckdb.DuckDBPyConnection, vm: VerifiedManifest, sha: str) -> bool:
    return bool(
        con.execute(
            """SELECT count(*) FROM retirement_hold WHERE agency = ? AND batch_id = ?
           AND manifest_sha256 = ? AND confirmed_at IS NOT NULL""",
            [vm.agency, vm.batch_id, sha],
        ).fetchall()[0][0]
    )


def record_hold(
    con: duckdb.DuckDBPyConnection, vm: VerifiedManifest, sha: str, held: RetirementHeld
) -> None:
    """The figures of a held snapshot (kept fresh: the agency's records may change while it
    waits); a confirmation already given is kept."""
    ensure_batch_tables(con)
    con.execute(
        """INSERT INTO retirement_hold (agency, batch_id, sequence, manifest_sha256,
                   current_records, would_retire, limit_share, held_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, now())
                   ON CONFLICT (agency, batch_id) DO UPDATE SET
                   current_records = excluded.current_records,
                   would_retire = excluded.would_retire, limit_share = excluded.limit_share""",
        [vm.agency, vm.batch_id, vm.sequence, sha, held.current, held.would_retire, held.limit],
    )
    log.warning("held snapshot %s/%s: %s", vm.agency, vm.batch_id, held.detail)


def awaiting_confirmation(con: duckdb.DuckDBPyConnection) -> set[Path]:
    """Held folders of snapshots waiting for an operator: not retried until confirmed (each
    retry would only hold them again)."""
    ensure_batch_tables(con)
    return {
        Path(p)
        for (p,) in con.execute(
            """SELECT b.held_path FROM held_batch b JOIN retirement_hold r
           ON r.agency = b.agency AND r.batch_id = b.batch_id
           AND r.manifest_sha256 = b.manifest_sha256
           WHERE r.confirmed_at IS NULL AND r.applied_at IS NULL"""
        ).fetchall()
    }


def mark_applied(con: duckdb.DuckDBPyConnection, vm: VerifiedManifest) -> None:
    con.execute(
        """UPDATE retirement_hold SET applied_at = now()
                   WHERE agency = ? AND batch_id = ?""",
        [vm.agency, vm.batch_id],
    )


def confirm_retirement(
    paths: HubPaths, agency: str, batch_id: str, reason: str, confirmed_by: str
) -> dict[str, object]:
    """Record an operator's confirmation that a held snapshot may retire what it retires; it
    applies at the next ingest. Refused (ValueError) for a batch not held for retirement, one
    already confirmed, or a reason/name that is empty, long or looks identifying."""
    check_operator_text(agency, reason=reason, confirmed_by=confirmed_by)
    with private_umask():
        paths.ensure()
        con = duckdb.connect(str(paths.warehouse))
        try:
            ensure_batch_tables(con)
            rows = con.execute(
                """SELECT h.current_records, h.would_retire, h.confirmed_at
                   FROM retirement_hold h JOIN held_batch b
                   ON b.agency = h.agency AND b.batch_id = h.batch_id
                   AND b.manifest_sha256 = h.manifest_sha256
                   WHERE h.agency = ? AND h.batch_id = ? AND h.applied_at IS NULL""",
                [agency, batch_id],
            ).fetchall()
            if not rows:
                raise ValueError(f"{agency} batch {batch_id} is not held for retirement")
            current, gone, confirmed_at = rows[0]
            if confirmed_at is not None:
                raise ValueError(
                    f"{agency} batch {batch_id} was already confirmed at {confirmed_at}"
                )
            con.execute(
                """UPDATE retirement_hold SET confirmed_at = now(), confirmed_by = ?,
                           confirm_reason = ? WHERE agency = ? AND batch_id = ?""",
                [confirmed_by, reason, agency, batch_id],
            )
        finally:
            con.close()
    log.warning(
        "retirement confirmed for %s/%s by %s: %d of %d records",
        agency,
        batch_id,
        confirmed_by,
        gone,
        current,
    )
    return {
        "agency": agency,
        "batch_id": batch_id,
        "current_records": int(current),
        "would_retire": int(gone),
        "confirmed_by": confirmed_by,
    }
