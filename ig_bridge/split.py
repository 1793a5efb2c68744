"""The bridge stage: one extract -> one signed batch in the landing zone.

read (chunks) -> validate (GX) -> normalise (ig_bridge.normalise) -> encode (ig_bridge.encoding,
partnership spec) -> record refs (AES-SIV, ig_bridge.keys) -> scrub payload -> write Parquet ->
build/sign manifest (ig_bridge.manifest) -> atomic rename. Rows read = accepted + quarantined,
always; quarantine stays at the agency. Nothing written to the landing zone contains a plaintext
identifier.
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
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ig_bridge.encoding import Encoder, load_encoding_spec
from ig_bridge.keys import KeyFileError, KeyStore, encrypt_record_refs
from ig_bridge.landing import sealed_batch
from ig_bridge.manifest import build_manifest, sign_manifest, write_manifest
from ig_bridge.normalise import normalise_identifiers
from ig_bridge.reader import ExtractUnreadable, iter_chunks, read_header
from ig_bridge.scrub import NAME_FIELDS, Scrubber, record_values
from ig_bridge.sealing import HubKeyMissing, HubPublicKey, bridge_hub_key
from ig_bridge.validate import OK, ExtractRefused, RowValidator, check_header, write_report
from schemas.mapping import (
    SUBJECT,
    Mapping,
    MappingError,
    PayloadPolicy,
    load_canonical,
    load_mapping,
)

__all__ = ["BatchResult", "BridgeKeysMissing", "ExtractRefused", "run_bridge",
           "validate_extract"]

_BOOL = {"y": True, "yes": True, "true": True, "1": True, "t": True,
         "n": False, "no": False, "false": False, "0": False, "f": False}
# Identifier fields whose presence makes a related-person slot worth a row in related.parquet.
_PERSON_FIELDS = ("given_name", "family_name", "full_name", "date_of_birth", "nhs_number",
                  "upn", "phone", "email", "postcode", "address", "address_line_1", "uprn")


class BridgeKeysMissing(Exception):  # noqa: N818 - reads as what the data officer must fix
    """The agency's key directory lacks a key the bridge needs; nothing was written."""


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
    # Closed-vocabulary values nulled in accepted rows: (line, field), never the value.
    field_problems: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class _Keys:
    link: object
    ref: object
    signing: object


def load_bridge_keys(agency_dir: Path, code: str, link_key_version: int | None = None) -> _Keys:
    """The bridge's current keys (the newest link key unless a version is asked for: K_link
    rotation). Never creates the partnership link key: every bridge must hold the SAME one, so
    a bridge that made its own would silently link nothing."""
    store = KeyStore(agency_dir / "keys", code)
    if not store.versions("link"):
        raise BridgeKeysMissing(
            f"{store.directory}: no partnership linkage key for {code}. Import the key the "
            "partnership lead sent you: joinedup-bridge keys import-link-key --agency-dir "
            f"{agency_dir} --agency {code} --file <wrapped key file>")
    missing = [k for k in ("ref", "signing") if not store.versions(k)]
    if missing:
        raise BridgeKeysMissing(
            f"{store.directory}: no {' or '.join(missing)} key for {code}. Create them with: "
            f"joinedup-bridge keys init --agency-dir {agency_dir} --agency {code}, and send the "
            "public key (keys show-public) to the hub")
    try:
        return _Keys(store.link_key(link_key_version), store.ref_key(), store.signing_key())
    except KeyFileError as exc:
        raise BridgeKeysMissing(str(exc)) from None


def load_hub_key(agency_dir: Path) -> HubPublicKey:
    """The hub's public sealing key the agency imported: without it nothing lands."""
    try:
        return bridge_hub_key(agency_dir / "keys")
    except (HubKeyMissing, KeyFileError) as exc:
        raise BridgeKeysMissing(str(exc)) from None


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


class _Quarantine:
    """Quarantined rows streamed to the agency's quarantine file chunk by chunk (a bad extract
    must not hold every refused row in memory), renamed into place only when the batch lands."""

    SCHEMA = pa.schema([pa.field("file", pa.string()), pa.field("line", pa.int64()),
                        pa.field("record", pa.int64()), pa.field("reason", pa.string()),
                        pa.field("raw", pa.string())])

    def __init__(self, final: Path) -> None:
        self.final = final
        self.part = final.with_name(final.name + ".part")
        self.rows = 0
        self._buf: list[dict] = []
        self._writer: pq.ParquetWriter | None = None

    def append(self, row: dict) -> None:
        self._buf.append(row)
        self.rows += 1

    def flush(self) -> None:
        if not self._buf:
            return
        if self._writer is None:
            self.part.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.part, self.SCHEMA, compression="zstd")
        self._writer.write_table(pa.Table.from_pylist(self._buf, schema=self.SCHEMA))
        self._buf = []

    def close(self, keep: bool) -> Path | None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if keep and self.rows:
            os.replace(self.part, self.final)
            return self.final
        self.part.unlink(missing_ok=True)
        return None


class _SeenIds:
    """Record ids already accepted or refused in this batch, for the duplicate check across
    chunks, in constant-size form: two keyed 64-bit hashes per id (vectorised, pandas), kept as
    one sorted array of 16-byte keys. 8x smaller than a set of str, and a lookup is a binary
    search instead of `Series.isin(set)` (which converted the whole set on every chunk)."""

    def __init__(self) -> None:
        # Random per batch: the hashes never leave the process; random keys make a crafted
        # collision pointless. 16 hex chars = the 16-byte siphash key pandas expects.
        self._keys = (os.urandom(8).hex(), os.urandom(8).hex())
        self._sorted = np.empty(0, dtype="S16")

    def _digest(self, ids: np.ndarray) -> np.ndarray:
        h = [pd.util.hash_array(ids, hash_key=k, categorize=False) for k in self._keys]
        return np.ascontiguousarray(np.stack(h, axis=1)).view("S16").ravel()

    def seen(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which ids were added before."""
        if not len(ids) or not len(self._sorted):
            return np.zeros(len(ids), dtype=bool)
        d = self._digest(ids)
        pos = np.searchsorted(self._sorted, d)
        hit = pos < len(self._sorted)
        hit[hit] = self._sorted[pos[hit]] == d[hit]
        return hit

    def add(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        d = np.unique(self._digest(ids))
        d = d[~np.isin(d, self._sorted)] if len(self._sorted) else d
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, d), d)


def _person_frame(raw: pd.DataFrame, mapping: Mapping, person: str) -> pd.DataFrame:
    cols = mapping.identifier_columns(person)
    return pd.DataFrame({f: raw[src] for f, src in cols.items()})


def _status_columns(mapping: Mapping) -> list[str]:
    """Fixed status columns for every chunk (a problem on an unlisted field goes to .other)."""
    cols: list[str] = []
    for person in [SUBJECT, *mapping.slots]:
        fields = set(mapping.identifier_columns(person))
        if "full_name" in fields:
            fields |= {"given_name", "family_name"}
        if "address" in fields:
            fields |= {"postcode"}
        fields.discard("full_name")
        if person != SUBJECT:
            fields.discard("record_id")
        cols += [f"{person}.{f}" for f in sorted(fields)] + [f"{person}.other"]
    cols += [f"payload.{f}" for f in mapping.payload_columns()]
    return cols


def _normalise(frame: pd.DataFrame, formats: tuple[str, ...], status: dict[str, np.ndarray],
               person: str) -> pd.DataFrame:
    """ig_bridge.normalise on one person slot; each field problem becomes a status reason."""
    nf = normalise_identifiers(frame, formats)
    pos = {ix: i for i, ix in enumerate(frame.index)}
    for row, f, reason in nf.problems:
        if f == "record_id":
            continue  # checked below with duplicates, one reason per row
        key = f"{person}.{f}" if f"{person}.{f}" in status else f"{person}.other"
        if status[key][pos[row]] == OK:
            status[key][pos[row]] = reason
    return nf.frame


def _parse_dates(s: pd.Series, formats: tuple[str, ...]) -> pd.Series:
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    for fmt in formats:
        todo = out.isna() & s.notna()
        if not todo.any():
            break
        out[todo] = pd.to_datetime(s[todo], format=fmt, errors="coerce")
    return out


def _payload_schema(mapping: Mapping) -> list[pa.Field]:
    canonical = load_canonical()
    types = {"date": pa.date32(), "number": pa.float64(), "boolean": pa.bool_()}
    return [pa.field(f, types.get(canonical.payload_fields[f]["type"], pa.string()))
            for f in mapping.payload_columns()]


def _payload(raw: pd.DataFrame, mapping: Mapping, status: dict[str, np.ndarray],
             date_formats: tuple[str, ...], policies: dict[str, PayloadPolicy],
             nulled: dict[str, np.ndarray]) -> pd.DataFrame:
    """Typed payload columns; unparseable values become a status reason, never silently null.
    A closed-vocabulary value outside its vocabulary (after the mapping's recodes) is nulled and
    its position put in `nulled` (field -> mask): the row is kept, the field problem reported."""
    out: dict[str, pd.Series] = {}
    for fname, src in mapping.payload_columns().items():
        pol = policies[fname]
        s = raw[src]
        present = s.notna().to_numpy()
        key = f"payload.{fname}"
        if pol.type == "date":
            parsed = _parse_dates(s, date_formats)
            bad = present & parsed.isna().to_numpy()
            out[fname] = parsed.dt.date
            status[key] = np.where(bad, "unparseable date", OK)
        elif pol.type == "number":
            num = pd.to_numeric(s.str.replace(",", "", regex=False), errors="coerce")
            status[key] = np.where(present & num.isna().to_numpy(), "not a number", OK)
            out[fname] = num.astype("float64")
        elif pol.type == "boolean":
            b = s.str.lower().map(_BOOL)
            status[key] = np.where(present & b.isna().to_numpy(), "not a yes/no value", OK)
            out[fname] = b.astype("boolean")
        elif pol.kind == "closed":
            v = _closed(s, pol)
            bad = present & v.isna().to_numpy()
            if bad.any():
                nulled[fname] = bad
            out[fname] = v
        else:  # scrubbed later, with the record's own identifiers at hand
            out[fname] = s.astype("string")
    return pd.DataFrame(out, index=raw.index)


def _closed(s: pd.Series, pol: PayloadPolicy) -> pd.Series:
    """Each value in its vocabulary's spelling, or null. Resolved once per distinct value (a
    category column holds a handful), so a 1M-row extract pays for a factorize, not 1M folds."""
    codes, uniques = pd.factorize(s)
    resolved = np.empty(len(uniques) + 1, dtype=object)  # last slot: missing (code -1)
    for i, u in enumerate(uniques):
        word = " ".join(str(u).split())
        hit = pol.lookup.get(word.lower())
        if hit is None and pol.pattern is not None and pol.pattern.fullmatch(word):
            hit = word
        resolved[i] = hit
    return pd.Series(resolved[codes], index=s.index, dtype="string")


def _quarantine_rows(rows: _Quarantine, raw: pd.DataFrame, positions: list[int],
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
    """Append tables to one Parquet file with a fixed schema (the same for every batch, so an
    all-null column keeps its type)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows = 0

    def write(self, df: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(df[self.schema.names], schema=self.schema,
                                     preserve_index=False)
        self.writer.write_table(table)
        self.rows += len(df)

    def close(self) -> None:
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
               progress: bool = False, link_key_version: int | None = None) -> BatchResult:
    """Turn one extract into one landed batch.

    Raises ExtractRefused on extract-level failure, BridgeKeysMissing when the agency's key
    directory (`<agency_dir>/keys`) lacks the partnership link key or its own keys.
    """
    extract_path, agency_dir, landing_dir = Path(extract_path), Path(agency_dir), Path(landing_dir)
    agency_dir.mkdir(parents=True, exist_ok=True)
    try:
        mapping = load_mapping(mapping_path)
    except MappingError as exc:
        raise _refuse(agency_dir, f"refused-{uuid.uuid4().hex[:8]}", extract_path, [str(exc)]) \
            from None
    code = mapping.code
    keys = load_bridge_keys(agency_dir, code, link_key_version)
    hub_key = load_hub_key(agency_dir)
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

    spec = load_encoding_spec()
    encoder = Encoder(keys.link, spec)
    enc_fields = encoder.arrow_fields()
    base = [pa.field("record_ref", pa.string()), pa.field("agency", pa.string()),
            pa.field("batch_id", pa.string())]
    schemas = {
        "identifiers.parquet": pa.schema(base + enc_fields),
        "related.parquet": pa.schema(base + [pa.field("slot", pa.string()),
                                             pa.field("relationship", pa.string())] + enc_fields),
        "payload.parquet": pa.schema(base + _payload_schema(mapping)),
    }
    slots = mapping.slots
    date_formats = mapping.source.date_formats
    status_cols = _status_columns(mapping)
    validator = RowValidator(status_cols, agency_dir / "reports" / "data_docs")
    scrubber = Scrubber()
    policies = mapping.payload_policies()
    scrubbed = [f for f, p in policies.items() if p.kind == "scrub"]
    field_problems: list[tuple[int, str]] = []
    all_status: list[pd.DataFrame] = []
    q_rows = _Quarantine(agency_dir / "quarantine" / f"{batch_id}.parquet")
    seen_ids = _SeenIds()
    read = accepted = 0
    reason_counts: dict[str, int] = {}
    file_name = extract_path.name

    with sealed_batch(landing_dir, code, batch_id, hub_key, agency_dir / "work") as tmp, Progress(
            TextColumn(f"[bold]bridging {file_name}"), BarColumn(),
            TextColumn("{task.completed:,} rows"), TimeElapsedColumn(),
            disable=not progress) as bar:
        task = bar.add_task("rows", total=None)
        writers = {n: _Writer(tmp / n, sch) for n, sch in schemas.items()}
        w_id, w_rel, w_pay = (writers[n] for n in schemas)
        try:
            for chunk in iter_chunks(extract_path, mapping.source):
                read += chunk.rows_read
                for m in chunk.malformed:
                    q_rows.append({"file": file_name, "line": m.line, "record": m.record,
                                   "reason": m.reason, "raw": m.raw})
                    r = m.reason.split(":")[0]
                    reason_counts[r] = reason_counts.get(r, 0) + 1
                raw = chunk.frame.reset_index(drop=True)
                bar.advance(task, chunk.rows_read)
                if raw.empty:
                    continue
                n = len(raw)
                status = {c: np.full(n, OK, dtype=object) for c in status_cols}
                persons = {p: _person_frame(raw, mapping, p) for p in [SUBJECT, *slots]}
                norm = {p: _normalise(f, date_formats, status, p) for p, f in persons.items()}
                rid = norm[SUBJECT]["record_id"]
                ids = rid.dropna().to_numpy(dtype=object)
                dup = rid.duplicated().to_numpy().copy()
                dup[rid.notna().to_numpy()] |= seen_ids.seen(ids)
                status[f"{SUBJECT}.record_id"] = np.where(
                    rid.isna().to_numpy(), "missing", np.where(dup, "duplicate", OK))
                seen_ids.add(ids)
                nulled: dict[str, np.ndarray] = {}
                payload = _payload(raw, mapping, status, date_formats, policies, nulled)
                status_df = pd.DataFrame(status).astype("category")
                checked = validator.check(status_df)
                bad_pos = sorted(checked.reasons)
                for pos in bad_pos:
                    for r in checked.reasons[pos]:
                        reason_counts[r] = reason_counts.get(r, 0) + 1
                _quarantine_rows(q_rows, raw, bad_pos, checked.reasons, chunk.lines,
                                 chunk.records, file_name)
                q_rows.flush()
                all_status.append(status_df)
                good = np.ones(n, dtype=bool)
                good[bad_pos] = False
                if not good.any():
                    continue
                refs = np.asarray(encrypt_record_refs(keys.ref, rid[good].tolist()), dtype=object)
                ident = encoder.encode(norm[SUBJECT][good].reset_index(drop=True))
                ident.insert(0, "batch_id", batch_id)
                ident.insert(0, "agency", code)
                ident.insert(0, "record_ref", refs)
                w_id.write(ident)
                for s in slots:
                    present = persons[s][good].drop(columns=["relationship"], errors="ignore")
                    present = present[[c for c in present.columns if c in _PERSON_FIELDS]]
                    idx = present.notna().any(axis=1).to_numpy()
                    if not idx.any():
                        continue
                    rn = norm[s][good][idx].reset_index(drop=True)
                    rel = rn["relationship"].fillna(mapping.related_persons[s]).astype(str)
                    rows = encoder.encode(rn)
                    rows.insert(0, "relationship", rel.to_numpy())
                    rows.insert(0, "slot", s)
                    rows.insert(0, "batch_id", batch_id)
                    rows.insert(0, "agency", code)
                    rows.insert(0, "record_ref", refs[idx])
                    w_rel.write(rows)
                for fname, mask in nulled.items():
                    field_problems += [(int(line), fname) for line in chunk.lines[mask & good]]
                pay = payload[good].reset_index(drop=True)
                _scrub_payload(pay, scrubbed, scrubber,
                               {p: f[good].reset_index(drop=True) for p, f in persons.items()},
                               {p: f[good].reset_index(drop=True) for p, f in norm.items()})
                pay.insert(0, "batch_id", batch_id)
                pay.insert(0, "agency", code)
                pay.insert(0, "record_ref", refs)
                w_pay.write(pay)
                accepted += int(good.sum())
        except BaseException:
            q_rows.close(keep=False)  # nothing landed: no quarantine file for this batch id
            raise
        finally:
            for w in writers.values():
                w.close()
        if read == 0:
            raise _refuse(agency_dir, batch_id, extract_path,
                          [f"{file_name}: empty file (header only, no rows)"])
        quarantined = q_rows.rows
        if read != accepted + quarantined:  # an invariant, never expected to fire
            raise RuntimeError(f"{file_name}: row accounting broken ({read} read, {accepted} "
                               f"accepted, {quarantined} quarantined)")
        rows_summary = {"read": read, "accepted": accepted, "quarantined": quarantined}
        manifest = sign_manifest(build_manifest(
            tmp, batch_id=batch_id, agency=code, sequence=seq, extract_kind=kind,
            created_at=created.isoformat(timespec="seconds"),
            mapping_version=mapping.mapping_version, canonical_version=mapping.canonical_version,
            encoding_spec_version=encoder.version, link_key_version=keys.link.version,
            ref_key_version=keys.ref.version, signing_key_id=keys.signing.key_id,
            rows=rows_summary), keys.signing)
        write_manifest(tmp, manifest)

    landed = landing_dir / code / batch_id
    _save_sequence(agency_dir, code, seq, batch_id)
    q_path = q_rows.close(keep=True)
    if all_status:
        validator.write_data_docs(pd.concat(all_status, ignore_index=True), batch_id)
    report = write_report(agency_dir / "reports" / f"{batch_id}.json", {
        "batch_id": batch_id, "file": str(extract_path), "status": "landed",
        "landed": str(landed), "rows": rows_summary, "reasons": reason_counts,
        "quarantine": str(q_path) if q_path else None,
        "field_problems": _field_problem_report(field_problems),
    })
    return BatchResult(batch_id, code, seq, landed, read, accepted, quarantined, q_path, report,
                       agency_dir / "reports" / "data_docs" if all_status else None,
                       reason_counts, field_problems)


_PROBLEM = "not in the closed vocabulary: field nulled, row kept"
_MAX_LISTED = 10_000  # the report lists this many (line, field) pairs, and counts them all


def _field_problem_report(problems: list[tuple[int, str]]) -> dict:
    """Line numbers and field names of nulled values; the values themselves stay out."""
    by_field: dict[str, int] = {}
    for _, f in problems:
        by_field[f] = by_field.get(f, 0) + 1
    return {"count": len(problems), "by_field": by_field, "problem": _PROBLEM,
            "rows": [{"line": line, "field": f} for line, f in problems[:_MAX_LISTED]]}


def _scrub_payload(pay: pd.DataFrame, text_fields: list[str], scrubber: Scrubber,
                   raw: dict[str, pd.DataFrame], norm: dict[str, pd.DataFrame]) -> None:
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
    dobs = {p: pd.to_datetime(norm[p]["date_of_birth"].iloc[rows]).dt.date.tolist()
            for p in raw}
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
