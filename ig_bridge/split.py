"""The bridge stage: one extract -> one signed batch in the landing zone.

read (chunks) -> validate (GX) -> normalise -> encode -> scrub payload -> write Parquet ->
sign manifest -> atomic rename. Rows read = accepted + quarantined, always; quarantine stays at
the agency. Nothing written to the landing zone contains a plaintext identifier.

Normalisation, encoding, keys and manifest belong to ig_bridge.normalise / encoding / keys /
manifest. Where those modules are not importable yet, the thin adapters in `_adapters` below are
used instead (see the module docstring there).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ig_bridge import _adapters as ad
from ig_bridge.landing import staged_batch
from ig_bridge.reader import ExtractUnreadable, iter_chunks, read_header
from ig_bridge.scrub import build_patterns, compile_patterns
from ig_bridge.validate import OK, ExtractRefused, RowValidator, check_header, write_report
from schemas.mapping import SUBJECT, Mapping, MappingError, load_canonical, load_mapping

__all__ = ["BatchResult", "ExtractRefused", "run_bridge", "validate_extract"]

_BOOL = {"y": True, "yes": True, "true": True, "1": True, "t": True,
         "n": False, "no": False, "false": False, "0": False, "f": False}


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


def _next_sequence(agency_dir: Path, code: str) -> int:
    state = agency_dir / "state.json"
    data = json.loads(state.read_text()) if state.exists() else {}
    return int(data.get(code, {}).get("sequence", 0)) + 1


def _save_sequence(agency_dir: Path, code: str, seq: int, batch_id: str) -> None:
    state = agency_dir / "state.json"
    data = json.loads(state.read_text()) if state.exists() else {}
    data[code] = {"sequence": seq, "last_batch_id": batch_id}
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, state)


def _person_frame(raw: pd.DataFrame, mapping: Mapping, person: str) -> pd.DataFrame:
    cols = mapping.identifier_columns(person)
    return pd.DataFrame({f: raw[src] for f, src in cols.items()})


def _payload(raw: pd.DataFrame, mapping: Mapping, status: dict[str, np.ndarray],
             date_formats: tuple[str, ...]) -> pd.DataFrame:
    """Typed payload columns; unparseable values become a status reason, never silently null."""
    canonical = load_canonical()
    out: dict[str, pd.Series] = {}
    for fname, src in mapping.payload_columns().items():
        spec = canonical.payload_fields[fname]
        s = raw[src]
        present = s.notna().to_numpy()
        key = f"payload.{fname}"
        if spec["type"] == "date":
            parsed = ad.parse_dates(s, date_formats)
            bad = present & parsed.isna().to_numpy()
            out[fname] = parsed.dt.date
            status[key] = np.where(bad, "unparseable date", OK)
        elif spec["type"] == "number":
            num = pd.to_numeric(s.str.replace(",", "", regex=False), errors="coerce")
            status[key] = np.where(present & num.isna().to_numpy(), "not a number", OK)
            out[fname] = num.astype("float64")
        elif spec["type"] == "boolean":
            b = s.str.lower().map(_BOOL)
            status[key] = np.where(present & b.isna().to_numpy(), "not a yes/no value", OK)
            out[fname] = b.astype("boolean")
        else:
            allowed = spec.get("allowed")
            if allowed:
                lookup = {str(a).lower(): str(a) for a in allowed}
                v = s.str.lower().map(lookup)
                status[key] = np.where(present & v.isna().to_numpy(), "not an allowed value", OK)
                out[fname] = v.astype("string")
            else:
                out[fname] = s.astype("string")
    return pd.DataFrame(out, index=raw.index)


def _quarantine_rows(rows: list[dict], raw: pd.DataFrame, positions: list[int],
                     reasons: dict[int, list[str]], lines: np.ndarray, records: np.ndarray,
                     file_name: str) -> None:
    sub = raw.iloc[positions]
    for pos, values in zip(positions, sub.to_dict("records"), strict=True):
        rows.append({
            "file": file_name, "line": int(lines[pos]), "record": int(records[pos]),
            "reason": "; ".join(reasons[pos]),
            "raw": json.dumps({k: (None if pd.isna(v) else v) for k, v in values.items()}),
        })


class _Writer:
    """Append tables to one Parquet file (schema fixed by the first table)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df, preserve_index=False)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        else:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)
        self.rows += len(df)

    def close(self, empty: pd.DataFrame) -> None:
        if self.writer is None:
            self.write(empty)
            self.rows = 0
        assert self.writer is not None
        self.writer.close()


def _refuse(agency_dir: Path, batch_id: str, file: Path, problems: list[str]) -> ExtractRefused:
    report = write_report(
        agency_dir / "reports" / f"{batch_id}.refused.json",
        {"batch_id": batch_id, "file": str(file), "status": "refused", "problems": problems},
    )
    return ExtractRefused(report, problems)


def validate_extract(extract_path: Path | str, mapping_path: Path | str,
                     agency_dir: Path | str) -> list[str]:
    """Extract-level checks only (the `validate` CLI). Returns problems; empty means fine."""
    extract_path, agency_dir = Path(extract_path), Path(agency_dir)
    try:
        mapping = load_mapping(mapping_path)
        header = read_header(extract_path, mapping.source)
    except (MappingError, ExtractUnreadable) as exc:
        return [str(exc)]
    return check_header(extract_path, header, mapping.source_columns)


def run_bridge(extract_path: Path | str, mapping_path: Path | str, agency_dir: Path | str,
               landing_dir: Path | str, extract_kind: str | None = None,
               progress: bool = False) -> BatchResult:
    """Turn one extract into one landed batch. Raises ExtractRefused on extract-level failure."""
    extract_path, agency_dir, landing_dir = Path(extract_path), Path(agency_dir), Path(landing_dir)
    agency_dir.mkdir(parents=True, exist_ok=True)
    try:
        mapping = load_mapping(mapping_path)
    except MappingError as exc:
        raise _refuse(agency_dir, f"refused-{uuid.uuid4().hex[:8]}", extract_path, [str(exc)]) \
            from None
    code = mapping.code
    seq = _next_sequence(agency_dir, code)
    created = datetime.now(UTC)
    batch_id = f"{code}-{seq:06d}-{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    kind = extract_kind or mapping.source.extract_kind
    if kind not in ("snapshot", "delta"):
        raise ValueError(f"extract_kind must be snapshot or delta, got {kind!r}")
    try:
        header = read_header(extract_path, mapping.source)
    except ExtractUnreadable as exc:
        raise _refuse(agency_dir, batch_id, extract_path, [str(exc)]) from None
    problems = check_header(extract_path, header, mapping.source_columns)
    if problems:
        raise _refuse(agency_dir, batch_id, extract_path, problems)

    keys = ad.load_keys(agency_dir / "keys", code)
    encoder = ad.make_encoder(keys)
    slots = mapping.slots
    date_formats = mapping.source.date_formats
    status_cols: list[str] | None = None
    validator: RowValidator | None = None
    docs_dir = agency_dir / "reports" / "data_docs"
    all_status: list[pd.DataFrame] = []
    q_rows: list[dict] = []
    seen_ids: set[str] = set()
    read = accepted = 0
    reason_counts: dict[str, int] = {}
    file_name = extract_path.name
    bar = ad.progress_bar(progress, extract_path)

    with staged_batch(landing_dir, code, batch_id) as tmp:
        w_id, w_rel, w_pay = (_Writer(tmp / n) for n in
                              ("identifiers.parquet", "related.parquet", "payload.parquet"))
        for chunk in iter_chunks(extract_path, mapping.source):
            read += chunk.rows_read
            for m in chunk.malformed:
                q_rows.append({"file": file_name, "line": m.line, "record": m.record,
                               "reason": m.reason, "raw": m.raw})
                reason_counts[m.reason.split(":")[0]] = reason_counts.get(
                    m.reason.split(":")[0], 0) + 1
            raw = chunk.frame.reset_index(drop=True)
            if raw.empty:
                continue
            status: dict[str, np.ndarray] = {}
            subj = ad.normalise(_person_frame(raw, mapping, SUBJECT), date_formats, status,
                                SUBJECT)
            rid = raw[mapping.record_id_column]
            dup = rid.duplicated().to_numpy() | rid.isin(seen_ids).to_numpy()
            status["subject.record_id"] = np.where(
                rid.isna().to_numpy(), "missing", np.where(dup, "duplicate", OK))
            seen_ids.update(rid.dropna().tolist())
            rel_norm = {s: ad.normalise(_person_frame(raw, mapping, s), date_formats, status, s)
                        for s in slots}
            payload = _payload(raw, mapping, status, date_formats)
            status_df = pd.DataFrame(status).astype("category")
            if validator is None:
                status_cols = list(status_df.columns)
                validator = RowValidator(status_cols, docs_dir)
            checked = validator.check(status_df[status_cols])
            bad_pos = sorted(checked.reasons)
            for pos in bad_pos:
                for r in checked.reasons[pos]:
                    reason_counts[r] = reason_counts.get(r, 0) + 1
            _quarantine_rows(q_rows, raw, bad_pos, checked.reasons, chunk.lines, chunk.records,
                             file_name)
            all_status.append(status_df)
            good = np.ones(len(raw), dtype=bool)
            good[bad_pos] = False
            if not good.any():
                continue
            raw_ok, subj_ok = raw[good], subj[good]
            refs = encoder.record_refs(raw_ok[mapping.record_id_column].tolist())
            ident = pd.concat([pd.DataFrame({"record_ref": refs, "agency": code,
                                             "batch_id": batch_id}),
                               encoder.encode(subj_ok).reset_index(drop=True)], axis=1)
            w_id.write(ident)
            for s in slots:
                rn = rel_norm[s][good]
                present = rn.drop(columns=["relationship"], errors="ignore").notna().any(axis=1)
                if not present.any():
                    continue
                rel = rn["relationship"] if "relationship" in rn else pd.Series(
                    [None] * len(rn), index=rn.index, dtype="string")
                rel = rel.fillna(mapping.related_persons[s])
                idx = present.to_numpy()
                rows = pd.concat([pd.DataFrame({
                    "record_ref": np.asarray(refs, dtype=object)[idx], "agency": code,
                    "batch_id": batch_id, "slot": s,
                    "relationship": rel[idx].astype(str).to_numpy()}),
                    encoder.encode(rn[idx].drop(columns=["relationship"], errors="ignore"))
                    .reset_index(drop=True)], axis=1)
                w_rel.write(rows)
            pay = payload[good].reset_index(drop=True)
            _scrub_payload(pay, mapping, raw_ok.reset_index(drop=True),
                           {SUBJECT: subj_ok.reset_index(drop=True),
                            **{s: rel_norm[s][good].reset_index(drop=True) for s in slots}})
            pay.insert(0, "batch_id", batch_id)
            pay.insert(0, "agency", code)
            pay.insert(0, "record_ref", refs)
            w_pay.write(pay)
            accepted += int(good.sum())
            bar.advance(chunk.rows_read)
        bar.stop()
        if read == 0:
            raise _refuse(agency_dir, batch_id, extract_path,
                          [f"{file_name}: empty file (header only, no rows)"])
        w_id.close(pd.DataFrame({"record_ref": pd.Series([], dtype="string")}))
        w_rel.close(pd.DataFrame({"record_ref": pd.Series([], dtype="string")}))
        w_pay.close(pd.DataFrame({"record_ref": pd.Series([], dtype="string")}))
        quarantined = len(q_rows)
        assert read == accepted + quarantined, "row accounting broken"
        manifest = {
            "batch_id": batch_id, "agency": code, "sequence": seq, "extract_kind": kind,
            "created_at": created.isoformat(), "mapping_version": mapping.mapping_version,
            "canonical_version": mapping.canonical_version,
            "encoding_spec_version": keys.encoding_spec_version,
            "link_key_version": keys.link_key_version, "ref_key_version": keys.ref_key_version,
            "signing_key_id": keys.signing_key_id,
            "rows": {"read": read, "accepted": accepted, "quarantined": quarantined},
        }
        ad.write_manifest(tmp, manifest, keys,
                          {"identifiers.parquet": w_id.rows, "related.parquet": w_rel.rows,
                           "payload.parquet": w_pay.rows})

    landed = landing_dir / code / batch_id
    _save_sequence(agency_dir, code, seq, batch_id)
    q_path = None
    if q_rows:
        q_path = agency_dir / "quarantine" / f"{batch_id}.parquet"
        q_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(q_rows), q_path)
    if validator is not None and all_status:
        validator.write_data_docs(pd.concat(all_status, ignore_index=True), batch_id)
    report = write_report(agency_dir / "reports" / f"{batch_id}.json", {
        "batch_id": batch_id, "file": str(extract_path), "status": "landed",
        "landed": str(landed), "rows": manifest["rows"], "reasons": reason_counts,
        "quarantine": str(q_path) if q_path else None,
    })
    return BatchResult(batch_id, code, seq, landed, read, accepted, quarantined, q_path, report,
                       docs_dir if validator else None, reason_counts)


def _scrub_payload(pay: pd.DataFrame, mapping: Mapping, raw: pd.DataFrame,
                   persons: dict[str, pd.DataFrame]) -> None:
    canonical = load_canonical()
    text_fields = [f for f in pay.columns if canonical.payload_fields[f]["type"] == "text"]
    if not text_fields:
        return
    raw_persons = {p: _person_frame(raw, mapping, p) for p in persons}
    for i in range(len(pay)):
        texts = {f: pay.at[i, f] for f in text_fields if not pd.isna(pay.at[i, f])}
        if not texts:
            continue
        pats: list[tuple[str, str]] = []
        for p, frame in raw_persons.items():
            vals = {k: (None if pd.isna(v) else v) for k, v in frame.iloc[i].items()}
            dob = persons[p].iloc[i].get("date_of_birth") if "date_of_birth" in persons[p] else None
            vals["date_of_birth_raw"] = vals.get("date_of_birth")
            vals["date_of_birth"] = None if dob is None or pd.isna(dob) else dob
            pats += build_patterns(p.upper(), vals)
        rx, placeholders = compile_patterns(pats)
        for f, t in texts.items():
            pay.at[i, f] = ad.scrub(str(t), rx, placeholders)
