"""Turn an agency's canonical records into its extract file, plus that extract's ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from synthetic_data.agencies import AgencyRecords, Ctx
from synthetic_data.agency_specs import AgencySpec, Col
from synthetic_data.corruption import CorruptionRates, corrupt
from synthetic_data.messy import MessyRates
from synthetic_data.messy import apply_records as messy_records
from synthetic_data.names import to_codec

# Canonical fields an extract column is composed from.
_NEEDS = {
    "full_name": ("given_name", "family_name"),
    "address": ("address_line_1", "address_line_2", "town"),
}
_ADDRESS_FIELDS = ("address_line_1", "address_line_2", "town", "postcode", "uprn")
CANONICAL_PATH = Path(__file__).resolve().parents[1] / "schemas" / "canonical_fields.yaml"
_CANONICAL = yaml.safe_load(CANONICAL_PATH.read_text(encoding="utf-8"))
_DATE_PAYLOAD = {k for k, v in _CANONICAL["payload_fields"].items() if v["type"] == "date"}
_SEX = {"MF": {"M": "M", "F": "F"}, "word": {"M": "Male", "F": "Female"}}


@dataclass
class AgencyOutput:
    extract: pd.DataFrame
    records_truth: pd.DataFrame
    related_truth: pd.DataFrame


def base_fields(cols: list[Col]) -> list[str]:
    out: list[str] = []
    for c in cols:
        if c.cls != "identifier" or c.field in ("record_id", "relationship"):
            continue
        for f in _NEEDS.get(c.field, (c.field,)):
            if f not in out:
                out.append(f)
    return out


def canonical(c: Ctx, person_id: np.ndarray, fields: list[str]) -> pd.DataFrame:
    """Clean canonical identifier values of the given people (person_id -1 -> all missing)."""
    ok = person_id >= 0
    pid = np.where(ok, person_id, 0)
    p = c.p
    out: dict[str, object] = {}
    addr_id = c.addr[pid]
    addrs = c.pop.addresses
    prev = c.pop.households["previous_address_id"].to_numpy()[c.hid[pid]]
    landline = c.pop.households["landline"].to_numpy(dtype=object)[c.hid[pid]]
    for f in fields:
        if f in _ADDRESS_FIELDS:
            v = addrs[f].to_numpy()[addr_id]
        elif f == "nhs_number":
            raw = p["nhs_number"].to_numpy()[pid]
            v = np.where(raw >= 0, pd.Series(raw).astype(str).to_numpy(dtype=object), None)
        elif f == "phone":
            mob = p["mobile"].to_numpy(dtype=object)[pid]
            v = np.where(pd.isna(mob), landline, mob)
        elif f in ("upn", "dob_is_estimated"):
            continue  # agency-issued / agency-judged: filled in by the caller
        else:
            v = p[f].to_numpy()[pid]
        out[f] = v
    frame = pd.DataFrame(out)
    if any(f in _ADDRESS_FIELDS for f in fields):
        frame["address_id"] = addr_id
        frame["prev_address_id"] = prev
    if "date_of_birth" in frame:
        frame["date_of_birth"] = frame["date_of_birth"].astype("datetime64[s]")
    # Missing people have no values at all.
    for col in frame.columns:
        if col in ("address_id", "prev_address_id"):
            frame[col] = np.where(ok, frame[col], -1)
        elif col == "date_of_birth":
            frame.loc[~ok, col] = pd.NaT
        else:
            frame[col] = frame[col].astype(object).where(ok, None)
    return frame


def _join(*parts: pd.Series, sep: str = " ") -> pd.Series:
    """Join the non-empty parts of each row (vectorised; a row with no parts is None)."""
    res: pd.Series | None = None
    for s in parts:
        s = s.astype(object).where(s.map(lambda x: isinstance(x, str) and x != ""), None)
        if res is None:
            res = s
            continue
        both = res.notna() & s.notna()
        joined = res.where(~both, res.where(both, "") + sep + s.where(both, ""))
        res = joined.where(joined.notna(), s)
    assert res is not None
    return res


def _date(s: pd.Series, spec: AgencySpec, fmt: str | None) -> pd.Series:
    s = pd.to_datetime(s)
    if fmt == "native":
        return pd.Series(s.dt.date.astype(object).where(s.notna(), None), index=s.index)
    return s.dt.strftime(spec.date_format).astype(object).where(s.notna(), None)


def render(
    spec: AgencySpec,
    subj: pd.DataFrame,
    persons: dict[str, pd.DataFrame],
    relationships: dict[str, pd.Series],
) -> pd.DataFrame:
    """Lay out the agency's columns from (dirty) canonical values, in the agency's own style."""
    out: dict[str, pd.Series] = {}
    for col in spec.columns:
        if col.cls == "drop":
            out[col.source] = subj[f"_{col.source}"]
            continue
        if col.cls == "payload":
            v = subj[col.field]
            if col.field in _DATE_PAYLOAD:
                v = _date(v, spec, col.fmt)
            elif v.dtype == bool:
                v = v.map({True: "Y", False: "N"}) if col.fmt == "YN" else v
            out[col.source] = v
            continue
        d = persons[col.person]
        f = col.field
        if f == "record_id":
            v = subj["record_id"]
        elif f == "relationship":
            v = relationships[col.person]
            if col.fmt == "title":
                v = v.map(
                    lambda x: x.replace("_", " ").capitalize() if isinstance(x, str) else None
                )
        elif f == "full_name":
            if col.fmt == "surname_first":
                v = _join(
                    d["family_name"].map(lambda x: x.upper() if isinstance(x, str) else None),
                    d["given_name"],
                    sep=", ",
                )
            else:
                v = _join(d["given_name"], d["family_name"])
        elif f == "address":
            v = _join(d["address_line_1"], d["address_line_2"], d["town"], sep=", ")
            if col.fmt == "upper_no_postcode":
                v = v.str.upper()
        elif f == "date_of_birth":
            v = _date(d[f], spec, col.fmt)
        elif f == "dob_is_estimated":
            v = subj[f].map({True: "Y", False: "N"})
        elif f == "sex":
            v = d[f].map(_SEX[col.fmt or "MF"])
        elif f == "nhs_number":
            v = (
                d[f]
                if col.fmt != "spaced"
                else d[f].map(lambda x: f"{x[:3]} {x[3:6]} {x[6:]}" if isinstance(x, str) else None)
            )
        elif f == "uprn":
            v = (
                d[f].astype("Int64")
                if col.fmt == "native"
                else d[f].map(lambda x: None if pd.isna(x) else str(x))
            )
        elif f == "upn":
            v = subj["upn"]
        else:
            v = d[f]
        if col.fmt == "upper" and f != "full_name":
            v = v.map(lambda x: x.upper() if isinstance(x, str) else x)
        out[col.source] = pd.Series(
            np.asarray(v, dtype=object) if not isinstance(v.dtype, pd.Int64Dtype) else v.to_numpy(),
            index=subj.index,
        )
    frame = pd.DataFrame(out)
    if spec.encoding.replace("-", "").lower() not in ("utf8", "utf8sig"):
        for c in frame.columns:
            if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c]):
                frame[c] = frame[c].map(
                    lambda x: to_codec(x, spec.encoding) if isinstance(x, str) else x
                )
    return frame


def build_agency_output(
    spec: AgencySpec,
    recs: AgencyRecords,
    c: Ctx,
    rng: np.random.Generator,
    rates: CorruptionRates,
    messy: tuple[MessyRates, np.random.Generator] | None = None,
) -> AgencyOutput:
    """`messy`: the messy profile's record errors and their own random stream (None for the
    default profile, which then draws exactly what it always did)."""
    subj = recs.subjects.reset_index(drop=True)
    scaled = rates.scaled(spec.quality)
    slots = sorted({col.person for col in spec.columns if col.cls == "identifier"})
    persons: dict[str, pd.DataFrame] = {}
    relationships: dict[str, pd.Series] = {}
    flags = pd.DataFrame(index=subj.index)
    clean_subject = None
    for slot in slots:
        cols = [col for col in spec.columns if col.person == slot and col.cls == "identifier"]
        pid = (
            subj["person_id"].to_numpy()
            if slot == "subject"
            else recs.related[slot]["person_id"].to_numpy()
        )
        clean = canonical(c, pid, base_fields(cols))
        if slot == "subject":
            # What the agency never collected is absent from its "clean" values too.
            for f, share in spec.holds.items():
                if f in clean:
                    clean[f] = clean[f].where(rng.random(len(clean)) < share, None)
        # Related persons are typed in by the same staff, but with half the care given to
        # the subject's own details; their flags are not kept.
        dirty, fl = corrupt(
            clean,
            rng,
            scaled if slot == "subject" else rates.scaled(spec.quality * 0.5),
            c.pop.addresses,
        )
        if messy is not None:
            messy_records(
                c,
                pid,
                dirty,
                fl,
                messy[1],
                messy[0],
                slot,
                None if slot == "subject" else recs.related[slot]["relationship"],
            )
        if slot == "subject":
            clean_subject, flags = clean, fl
            if "dob_is_estimated" in subj:
                est = subj["dob_is_estimated"].to_numpy()
                dob = pd.to_datetime(dirty["date_of_birth"])
                year = dob.dt.year + rng.integers(-2, 3, len(dob))
                est_dob = pd.to_datetime(dict(year=year, month=1, day=1))
                dirty["date_of_birth"] = dob.where(~est, est_dob).astype("datetime64[s]")
                flags["cor_dob_estimated"] = est
        else:
            relationships[slot] = recs.related[slot]["relationship"]
        persons[slot] = dirty
    extract = render(spec, subj, persons, relationships)

    truth = pd.DataFrame(
        {
            "agency": spec.code,
            "record_id": subj["record_id"],
            "person_id": subj["person_id"].astype(np.int64),
            "household_id": c.hid[subj["person_id"].to_numpy()].astype(np.int64),
        }
    )
    assert clean_subject is not None
    for f in clean_subject.columns:
        truth[f"clean_{f}" if f not in ("address_id", "prev_address_id") else f] = clean_subject[
            f
        ].to_numpy()
    if "address_id" in clean_subject:
        truth["shown_address_id"] = persons["subject"]["address_id"].to_numpy()
    if "upn" in subj:
        truth["clean_upn"] = subj["upn"]
    for k in flags.columns:
        truth[k] = flags[k].to_numpy()
    truth["text_identifiers"] = [json.dumps(m, ensure_ascii=False) for m in recs.text_mentions]

    rel_parts = []
    for slot, rel in recs.related.items():
        has = rel["person_id"].to_numpy() >= 0
        rel_parts.append(
            pd.DataFrame(
                {
                    "agency": spec.code,
                    "record_id": subj["record_id"].to_numpy()[has],
                    "slot": slot,
                    "person_id": rel["person_id"].to_numpy()[has].astype(np.int64),
                    "relationship": rel["relationship"].to_numpy()[has],
                }
            )
        )
    related = (
        pd.concat(rel_parts, ignore_index=True)
        if rel_parts
        else pd.DataFrame(columns=["agency", "record_id", "slot", "person_id", "relationship"])
    )
    return AgencyOutput(extract, truth, related)


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Parquet written the same way every time so equal inputs give byte-identical files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, compression="snappy", write_statistics=True)


def write_extract(spec: AgencySpec, frame: pd.DataFrame, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.file_name
    if spec.file_format == "parquet":
        write_table(frame, path)
    else:
        frame.to_csv(
            path,
            sep=spec.delimiter,
            index=False,
            encoding=spec.encoding,
            lineterminator="\r\n" if spec.encoding == "cp1252" else "\n",
        )
    return path
