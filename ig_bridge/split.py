"""The bridge stage: one extract -> one signed batch in the landing zone.

read (chunks) -> row checks (ig_bridge.rowcheck: normalise, null and report bad fields, GX
quarantines only unlinkable rows) -> encode (ig_bridge.encoding, partnership spec) -> record
refs (AES-SIV, ig_bridge.keys) -> scrub payload -> write Parquet -> build/sign manifest
(ig_bridge.manifest) -> atomic rename. Rows read = accepted + quarantined, always; quarantine
stays at the agency. Nothing written to the landing zone contains a plaintext identifier.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ig_bridge.batch_files import _payload_schema, _Quarantine, _quarantine_rows, _Writer
from ig_bridge.bridge_state import (
    BridgeKeysMissing,
    _next_sequence,
    _save_sequence,
    load_bridge_keys,
    load_hub_key,
)
from ig_bridge.consent_notice import carry_withdrawals
from ig_bridge.dryrun import extract_problems
from ig_bridge.encoding import Encoder, load_encoding_spec
from ig_bridge.keys import encrypt_record_refs
from ig_bridge.landing import sealed_batch
from ig_bridge.manifest import build_manifest, sign_manifest, write_manifest
from ig_bridge.name_normalise import PLACEHOLDER_NAME
from ig_bridge.reader import ExtractUnreadable, iter_chunks
from ig_bridge.rowcheck import ROW_STATUS, FieldProblems, SeenIds, check_chunk, identifying_count
from ig_bridge.scrub import NAME_FIELDS, Scrubber, record_values
from ig_bridge.snapshot_guard import (
    SnapshotRefused,
    check_reason,
    enforce,
    log_forced,
    record_snapshot,
)
from ig_bridge.sniff import sniff
from ig_bridge.validate import OK, ExtractRefused, RowValidator, write_report
from schemas.mapping import (
    SUBJECT,
    MappingError,
    load_mapping,
)

__all__ = [
    "BatchResult",
    "BridgeKeysMissing",
    "ExtractRefused",
    "SnapshotRefused",
    "run_bridge",
    "validate_extract",
]


@dataclass
class BatchResult:
    batch_id: str
    agency: str
    sequence: int
    landed_path: Path | None
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_path: Path | None
    report_path: Path
    data_docs_dir: Path | None
    reasons: dict[str, int] = field(default_factory=dict)
    # Payload values nulled in accepted rows (outside the vocabulary or type): (line, field).
    field_problems: list[tuple[int, str]] = field(default_factory=list)
    # Every field problem in accepted rows, identifiers and payload: "<person>.<field>" or
    # "payload.<field>" -> reason -> rows (values nulled, or kept and flagged: swapped/partial).
    field_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    hints: list[str] = field(default_factory=list)  # e.g. the encoding rows were not in
    # Refs of quarantined records sent as "present, not updated" (present.parquet), and the
    # guards the data officer forced, with the reason (None: no guard was forced).
    present_refs: int = 0
    forced: dict | None = None
    # Placeholder names nulled before encoding in accepted rows, per field (counts only).
    placeholder_names: dict[str, int] = field(default_factory=dict)


_POSTCODE_FIELDS = (
    "postcode",
    "postcode_outward",
    "postcode_district",
    "postcode_sector",
    "postcode_area",
    "postcode_valid",
)


def _with_home_postcode(related: pd.DataFrame, subject: pd.DataFrame) -> pd.DataFrame:
    """A related person recorded without any address (a lead adult named on a child's record)
    gets the naming record's postcode: the hub finds them by family name + postcode (spec v3
    has no standalone postcode token to compare with the subject's)."""
    if "postcode" not in related or "postcode" not in subject:
        return related
    no_address = related["postcode"].isna()
    if "address_line_1" in related:
        no_address &= related["address_line_1"].isna()
    if not no_address.any():
        return related
    out = related.copy()
    for f in _POSTCODE_FIELDS:
        if f in out and f in subject:
            out[f] = out[f].astype(object).where(~no_address, subject[f].astype(object))
    return out


def _refuse(agency_dir: Path, batch_id: str, file: Path, problems: list[str]) -> ExtractRefused:
    report = write_report(
        agency_dir / "reports" / f"{batch_id}.refused.json",
        {"batch_id": batch_id, "file": str(file), "status": "refused", "problems": problems},
    )
    return ExtractRefused(report, problems)


def validate_extract(
    extract_path: Path | str, mapping_path: Path | str, agency_dir: Path | str
) -> list[str]:
    """Extract-level checks only (the DAG's validate task and the CLI's `validate` run the
    whole dry run, ig_bridge.dryrun). Returns problems; empty means the rows can be read."""
    extract_path = Path(extract_path)
    try:
        mapping = load_mapping(mapping_path)
    except MappingError as exc:
        return [str(exc)]
    return extract_problems(extract_path, mapping)


def run_bridge(
    extract_path: Path | str,
    mapping_path: Path | str,
    agency_dir: Path | str,
    landing_dir: Path | str,
    extract_kind: str | None = None,
    progress: bool = False,
    link_key_version: int | None = None,
    force_reason: str | None = None,
    data_docs: bool = False,
) -> BatchResult:
    """Turn one extract into one landed batch.

    Great Expectations' Data Docs (agency_dir/reports/data_docs) are rendered for a batch
    with a row problem (GX is loaded for its verdicts then) or when `data_docs` asks: a
    batch whose every row passed needs no GX, which costs ~10 s of imports per process.

    Raises ExtractRefused on extract-level failure, SnapshotRefused (a subclass) when a
    snapshot guard refuses it and `force_reason` is None (ig_bridge.snapshot_guard),
    BridgeKeysMissing when the agency's key directory (`<agency_dir>/keys`) lacks the
    partnership link key or its own keys.
    """
    extract_path, agency_dir, landing_dir = Path(extract_path), Path(agency_dir), Path(landing_dir)
    if force_reason is not None:
        force_reason = check_reason(force_reason)  # before any work: it goes to the hub
    agency_dir.mkdir(parents=True, exist_ok=True)
    try:
        mapping = load_mapping(mapping_path)
    except MappingError as exc:
        raise _refuse(
            agency_dir, f"refused-{uuid.uuid4().hex[:8]}", extract_path, [str(exc)]
        ) from None
    code = mapping.code
    keys = load_bridge_keys(agency_dir, code, link_key_version)
    hub_key = load_hub_key(agency_dir)
    seq = _next_sequence(agency_dir, code)
    created = datetime.now(UTC)
    batch_id = f"{code}-{seq:06d}-{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    kind = extract_kind or mapping.source.extract_kind
    if kind not in ("snapshot", "delta"):
        raise ValueError(f"extract_kind must be snapshot or delta, got {kind!r}")
    problems = extract_problems(extract_path, mapping)
    if problems:
        raise _refuse(agency_dir, batch_id, extract_path, problems)

    spec = load_encoding_spec()
    encoder = Encoder(keys.link, spec)
    enc_fields = encoder.arrow_fields()
    base = [
        pa.field("record_ref", pa.string()),
        pa.field("agency", pa.string()),
        pa.field("batch_id", pa.string()),
    ]
    schemas = {
        "identifiers.parquet": pa.schema(base + enc_fields),
        "related.parquet": pa.schema(
            base
            + [pa.field("slot", pa.string()), pa.field("relationship", pa.string())]
            + enc_fields
        ),
        "payload.parquet": pa.schema(base + _payload_schema(mapping)),
        # refs of quarantined records that are still in the agency's system: refs only
        "present.parquet": pa.schema(base),
    }
    slots = mapping.slots
    validator = RowValidator(list(ROW_STATUS), agency_dir / "reports" / "data_docs")
    scrubber = Scrubber()
    policies = mapping.payload_policies()
    scrubbed = [f for f, p in policies.items() if p.kind == "scrub"]
    field_problems: list[tuple[int, str]] = []
    fields = FieldProblems()
    all_status: list[pd.DataFrame] = []
    q_rows = _Quarantine(agency_dir / "quarantine" / f"{batch_id}.parquet")
    seen_ids = SeenIds()
    read = accepted = 0
    reason_counts: dict[str, int] = {}
    file_name = extract_path.name

    with (
        sealed_batch(landing_dir, code, batch_id, hub_key, agency_dir / "work") as tmp,
        Progress(
            TextColumn(f"[bold]bridging {file_name}"),
            BarColumn(),
            TextColumn("{task.completed:,} rows"),
            TimeElapsedColumn(),
            disable=not progress,
        ) as bar,
    ):
        task = bar.add_task("rows", total=None)
        writers = {n: _Writer(tmp / n, sch) for n, sch in schemas.items()}
        w_id, w_rel, w_pay, w_present = (writers[n] for n in schemas)
        try:
            for chunk in iter_chunks(extract_path, mapping.source):
                read += chunk.rows_read
                for m in chunk.malformed:
                    q_rows.append(
                        {
                            "file": file_name,
                            "line": m.line,
                            "record": m.record,
                            "reason": m.reason,
                            "raw": m.raw,
                        }
                    )
                    r = m.reason.split(":")[0]
                    reason_counts[r] = reason_counts.get(r, 0) + 1
                raw = chunk.frame.reset_index(drop=True)
                bar.advance(task, chunk.rows_read)
                if raw.empty:
                    continue
                c = check_chunk(raw, chunk.lines, mapping, policies, seen_ids, validator)
                bad_pos = sorted(c.reasons)
                for pos in bad_pos:
                    for r in c.reasons[pos]:
                        if r.split(":")[0] in ROW_STATUS:
                            reason_counts[r] = reason_counts.get(r, 0) + 1
                _quarantine_rows(
                    q_rows, raw, bad_pos, c.reasons, chunk.lines, chunk.records, file_name
                )
                q_rows.flush()
                all_status.append(c.status)
                good = c.good
                for name, st in c.field_status.items():
                    fields.add(name, st[good], chunk.lines[good])
                _write_present(
                    w_present,
                    keys.ref,
                    c.norm[SUBJECT]["record_id"],
                    good,
                    c.status[f"{SUBJECT}.record_id"].to_numpy(),
                    code,
                    batch_id,
                )
                if not good.any():
                    continue
                rid = c.norm[SUBJECT]["record_id"]
                refs = np.asarray(encrypt_record_refs(keys.ref, rid[good].tolist()), dtype=object)
                ident = encoder.encode(c.norm[SUBJECT][good].reset_index(drop=True))
                ident.insert(0, "batch_id", batch_id)
                ident.insert(0, "agency", code)
                ident.insert(0, "record_ref", refs)
                w_id.write(ident)
                for s in slots:
                    # A slot is written when something identifying survived its checks.
                    rn_all = c.norm[s][good]
                    idx = (identifying_count(rn_all) > 0) | rn_all["given_name"].notna().to_numpy()
                    if not idx.any():
                        continue
                    rn = _with_home_postcode(
                        rn_all[idx].reset_index(drop=True),
                        c.norm[SUBJECT][good][idx].reset_index(drop=True),
                    )
                    rel = rn["relationship"].fillna(mapping.related_persons[s]).astype(str)
                    rows = encoder.encode(rn)
                    rows.insert(0, "relationship", rel.to_numpy())
                    rows.insert(0, "slot", s)
                    rows.insert(0, "batch_id", batch_id)
                    rows.insert(0, "agency", code)
                    rows.insert(0, "record_ref", refs[idx])
                    w_rel.write(rows)
                for fname, mask in c.payload_nulled.items():
                    field_problems += [(int(line), fname) for line in chunk.lines[mask & good]]
                pay = c.payload[good].reset_index(drop=True)
                carry_withdrawals(pay, rid[good], agency_dir)  # ig_bridge.consent_notice
                _scrub_payload(
                    pay,
                    scrubbed,
                    scrubber,
                    {p: f[good].reset_index(drop=True) for p, f in c.persons.items()},
                    {p: f[good].reset_index(drop=True) for p, f in c.norm.items()},
                )
                pay.insert(0, "batch_id", batch_id)
                pay.insert(0, "agency", code)
                pay.insert(0, "record_ref", refs)
                w_pay.write(pay)
                accepted += int(good.sum())
        except ExtractUnreadable as exc:  # e.g. a row bigger than the reader takes
            q_rows.close(keep=False)
            raise _refuse(agency_dir, batch_id, extract_path, [str(exc)]) from None
        except BaseException:
            q_rows.close(keep=False)  # nothing landed: no quarantine file for this batch id
            raise
        finally:
            for w in writers.values():
                w.close()
        if read == 0:
            raise _refuse(
                agency_dir,
                batch_id,
                extract_path,
                [f"{file_name}: empty file (header only, no rows)"],
            )
        quarantined = q_rows.rows
        if read != accepted + quarantined:  # an invariant, never expected to fire
            raise RuntimeError(
                f"{file_name}: row accounting broken ({read} read, {accepted} "
                f"accepted, {quarantined} quarantined)"
            )
        rows_summary = {"read": read, "accepted": accepted, "quarantined": quarantined}
        # Inside the sealed batch: a refusal lands nothing and spends no sequence number.
        forced = enforce(
            agency_dir,
            code,
            batch_id,
            extract_path,
            kind,
            rows_summary,
            mapping.snapshot_guards,
            force_reason,
            keep_quarantine=lambda: q_rows.close(keep=True),
        )
        manifest = sign_manifest(
            build_manifest(
                tmp,
                batch_id=batch_id,
                agency=code,
                sequence=seq,
                extract_kind=kind,
                created_at=created.isoformat(timespec="seconds"),
                mapping_version=mapping.mapping_version,
                canonical_version=mapping.canonical_version,
                encoding_spec_version=encoder.version,
                link_key_version=keys.link.version,
                ref_key_version=keys.ref.version,
                signing_key_id=keys.signing.key_id,
                rows=rows_summary,
                field_problems=fields.counts,
                forced=forced,
            ),
            keys.signing,
        )
        write_manifest(tmp, manifest)

    landed = landing_dir / code / batch_id
    _save_sequence(agency_dir, code, seq, batch_id)
    if kind == "snapshot":
        record_snapshot(agency_dir, code, batch_id, rows_summary)
    if forced is not None:
        log_forced(agency_dir, code, batch_id, forced)
    q_path = q_rows.close(keep=True)
    docs = bool(all_status) and (data_docs or validator.used_gx)
    if docs:
        validator.write_data_docs(pd.concat(all_status, ignore_index=True), batch_id)
    hints = (
        sniff(extract_path, mapping.source, mapping.source_columns)
        if any(r.startswith("undecodable") for r in reason_counts)
        else []
    )
    placeholders = _placeholder_counts(fields.counts)
    report = write_report(
        agency_dir / "reports" / f"{batch_id}.json",
        {
            "batch_id": batch_id,
            "file": str(extract_path),
            "status": "landed",
            "landed": str(landed),
            "rows": rows_summary,
            "reasons": reason_counts,
            "quarantine": str(q_path) if q_path else None,
            "field_problems": _field_problem_report(field_problems),
            "field_counts": fields.counts,
            "field_rows": [{"line": line, "field": f, "reason": r} for line, f, r in fields.rows],
            "min_identifying_fields": mapping.min_identifying_fields,
            "hints": hints,
            "present_refs": w_present.rows,
            "forced": forced,
            "placeholder_names": {
                "count": sum(placeholders.values()),
                "by_field": placeholders,
                "problem": PLACEHOLDER_NAME,
            },
        },
    )
    return BatchResult(
        batch_id,
        code,
        seq,
        landed,
        read,
        accepted,
        quarantined,
        q_path,
        report,
        agency_dir / "reports" / "data_docs" if docs else None,
        reason_counts,
        field_problems,
        fields.counts,
        hints,
        present_refs=w_present.rows,
        forced=forced,
        placeholder_names=placeholders,
    )


def _placeholder_counts(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Placeholder names nulled per field ("given_name" for the subject, "<slot>.<field>")."""
    out = {}
    for name, reasons in counts.items():
        n = reasons.get(PLACEHOLDER_NAME, 0)
        if n:
            person, _, fname = name.partition(".")
            out[fname if person == SUBJECT else name] = n
    return out


def _write_present(
    w: _Writer,
    ref_key: object,
    rid: pd.Series,
    good: np.ndarray,
    id_status: np.ndarray,
    code: str,
    batch_id: str,
) -> None:
    """Refs of quarantined rows that carry their record's first (non-duplicate) record id:
    the record is still in the agency's system, only this extract's copy is unusable, so a
    snapshot must not retire it at the hub. Refs only (no payload, no identifiers)."""
    keep = ~good & (id_status == OK)
    if not keep.any():
        return
    refs = encrypt_record_refs(ref_key, rid[keep].tolist())
    w.write(pd.DataFrame({"record_ref": refs, "agency": code, "batch_id": batch_id}))


_PROBLEM = "payload value outside its vocabulary or type: field nulled, row kept"
_MAX_LISTED = 10_000  # the report lists this many (line, field) pairs, and counts them all


def _field_problem_report(problems: list[tuple[int, str]]) -> dict:
    """Line numbers and field names of nulled values; the values themselves stay out."""
    by_field: dict[str, int] = {}
    for _, f in problems:
        by_field[f] = by_field.get(f, 0) + 1
    return {
        "count": len(problems),
        "by_field": by_field,
        "problem": _PROBLEM,
        "rows": [{"line": line, "field": f} for line, f in problems[:_MAX_LISTED]],
    }


def _scrub_payload(
    pay: pd.DataFrame,
    text_fields: list[str],
    scrubber: Scrubber,
    raw: dict[str, pd.DataFrame],
    norm: dict[str, pd.DataFrame],
) -> None:
    """Scrub the text fields and open categories of each record (its own persons' identifiers,
    then everyone's, ig_bridge.scrub); closed vocabularies need no scrubbing."""
    if not text_fields:
        return
    for frame in raw.values():  # every name of this chunk, for cross-record mentions
        for f in NAME_FIELDS:
            if f in frame:
                scrubber.learn_names(frame[f].dropna().unique())
    has_text = pay[text_fields].notna().any(axis=1).to_numpy()
    rows = np.flatnonzero(has_text)
    if not len(rows):
        return
    values = {p: f.iloc[rows].to_dict("records") for p, f in raw.items()}
    dobs = {p: pd.to_datetime(norm[p]["date_of_birth"].iloc[rows]).dt.date.tolist() for p in raw}
    # Plain lists in, whole columns out: a per-cell write into an Arrow-backed column is slow.
    cols = {f: pay[f].astype(object).tolist() for f in text_fields}
    for j, i in enumerate(rows):
        persons = {}
        for p in raw:
            v = {k: x for k, x in values[p][j].items() if isinstance(x, str)}
            d = dobs[p][j]
            if d is not None and not pd.isna(d):
                v["date_of_birth_parsed"] = d
            persons[p] = v
        rv = record_values(persons)
        for f in text_fields:
            t = cols[f][i]
            if not pd.isna(t):
                cols[f][i] = scrubber.scrub(str(t), rv)
    for f in text_fields:
        pay[f] = pd.array(cols[f], dtype="string")
