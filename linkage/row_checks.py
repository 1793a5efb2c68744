"""Row-level checks on a verified batch, run on its staged rows before anything is written.

Every row of every file must belong to the signing agency and this batch, every payload and
related row must describe a record of this batch's identifiers, a present-but-quarantined ref
(present.parquet) must not also be sent updated, no record ref (updated or present) may be one
the hub holds for another agency, and every payload value must have the agreed type. Any breach
refuses the batch whole (raised inside the load transaction, which rolls back). Details name
the file, the column and a count, never a value.

Why the hub cannot simply "spot another agency's ref": refs are AES-SIV ciphertexts that only
their agency can decrypt. So the control is the labels (agency, batch_id) on every row, refs
already held for another agency, and deletes/upserts scoped to the signing agency: a batch
signed by A can only ever touch A's rows.
"""

from __future__ import annotations

import duckdb

from ig_bridge.manifest import BatchRefused, VerifiedManifest
from linkage.warehouse import quote_ident

#: staged table -> the batch file it came from
STAGED = {
    "_new_ident": "identifiers.parquet",
    "_new_rel": "related.parquet",
    "_new_pay": "payload.parquet",
    "_new_present": "present.parquet",
}


def check_ownership(con: duckdb.DuckDBPyConnection, vm: VerifiedManifest) -> None:
    p = {"agency": vm.agency, "batch": vm.batch_id}
    for table, name in STAGED.items():
        other_agency, other_batch, no_ref = con.execute(
            f"""
            SELECT count(*) FILTER (CAST(agency AS VARCHAR) IS DISTINCT FROM $agency),
                   count(*) FILTER (CAST(batch_id AS VARCHAR) IS DISTINCT FROM $batch),
                   count(*) FILTER (record_ref IS NULL) FROM {table}""",
            p,
        ).fetchall()[0]
        if other_agency:
            raise BatchRefused(
                "row_of_another_agency",
                f"{name}: {other_agency} row(s) not "
                f"labelled agency {vm.agency}, the signing agency",
            )
        if other_batch:
            raise BatchRefused(
                "row_of_another_batch",
                f"{name}: {other_batch} row(s) not labelled with this batch_id",
            )
        if no_ref:
            raise BatchRefused("record_ref_missing", f"{name}: {no_ref} row(s) without a ref")
    for table in ("_new_ident", "_new_present"):
        dupes = con.execute(
            f"SELECT count(*) - count(DISTINCT record_ref) FROM {table}"
        ).fetchall()[0][0]
        if dupes:
            raise BatchRefused(
                "duplicate_record_ref", f"{STAGED[table]}: {dupes} record_ref(s) appear twice"
            )
    both = con.execute("""SELECT count(*) FROM _new_present p WHERE EXISTS (
                          SELECT 1 FROM _new_ident i WHERE i.record_ref = p.record_ref)
                       """).fetchall()[0][0]
    if both:
        # "present, not updated" and updated at once: one of the two is a lie
        raise BatchRefused(
            "present_ref_also_updated",
            f"present.parquet: {both} record_ref(s) also sent in identifiers.parquet",
        )
    for table in ("_new_rel", "_new_pay"):
        orphans = con.execute(f"""SELECT count(*) FROM {table} s WHERE NOT EXISTS (
                                  SELECT 1 FROM _new_ident i WHERE i.record_ref = s.record_ref)
                               """).fetchall()[0][0]
        if orphans:
            raise BatchRefused(
                "ref_not_in_identifiers",
                f"{STAGED[table]}: {orphans} row(s) "
                "for a record_ref this batch's identifiers do not carry",
            )
    # Refs the warehouse holds for another agency, anywhere a ref is kept per agency: a
    # present ref of another agency's would otherwise claim (and keep) its record.
    for table in ("_new_ident", "_new_present"):
        foreign = con.execute(
            f"""SELECT count(*) FROM {table} n WHERE EXISTS (
                                  SELECT 1 FROM identifiers x WHERE x.record_ref = n.record_ref
                                  AND x.agency <> $agency) OR EXISTS (
                                  SELECT 1 FROM record_retired r
                                  WHERE r.record_ref = n.record_ref AND r.agency <> $agency)
                               """,
            {"agency": vm.agency},
        ).fetchall()[0][0]
        if foreign:
            raise BatchRefused(
                "ref_of_another_agency",
                f"{STAGED[table]}: {foreign} record_ref(s) the hub holds for another agency",
            )


def check_payload_types(
    con: duckdb.DuckDBPyConnection, columns: list[str], types: dict[str, str]
) -> None:
    """Every non-null payload value casts to its column's agreed type (no silent NULLs)."""
    if not columns:
        return
    checks = ", ".join(
        f"count(*) FILTER ({quote_ident(c)} IS NOT NULL AND "
        f"TRY_CAST({quote_ident(c)} AS {types[c]}) IS NULL)"
        for c in columns
    )
    counts = con.execute(f"SELECT {checks} FROM _new_pay").fetchall()[0]
    bad = [(c, n) for c, n in zip(columns, counts, strict=True) if n]
    if bad:
        fields = ", ".join(f"{c} ({n} row(s) not {types[c]})" for c, n in bad)
        raise BatchRefused("payload_type_mismatch", f"payload.parquet: {fields}")
