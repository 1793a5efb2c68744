"""What the curious hub holds, the attacker's plaintext reference set, and (evaluation only)
the ground truth that scores each guess.

The attacker plays the hub: it reads the warehouse's identifiers and payload tables after a real
bridge run. It also holds plaintext (names, DOB, sex, address) for a share of the same people
("overlap") and public-style frequency tables. Ground truth (which person a hub record is) comes
from decrypting each record_ref with its own agency's key: the scorer does that, never the attack.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from ig_bridge.encoding import Encoder, load_encoding_spec
from ig_bridge.keys import KeyStore, LinkKey, decrypt_record_ref
from ig_bridge.name_normalise import normalise_name_value
from ig_bridge.normalise import normalise_identifiers

SEP = "\x1f"  # the bridge's separator between combined fields (ig_bridge.encoding._SEP)
SALT = "\x1e"  # marks the salt in a Bloom preimage: q-grams of different salts never match
# Reference fields the attacker holds in plaintext, as canonical identifier fields.
REF_FIELDS = (
    "given_name",
    "middle_names",
    "family_name",
    "other_names",
    "date_of_birth",
    "sex",
    "address_line_1",
    "town",
    "postcode",
    # The person's own phone number: needed to attack keys that combine it with a name
    # (blk_given_canonical_phone); an attacker could hold it (a phone directory, a breach).
    "phone",
)


@dataclass
class HubData:
    """Identifier rows the hub holds (one per record) + year_group from its payload table."""

    records: pd.DataFrame  # record_ref, agency, tok_*, blk_*, bf_* (bytes) , year_group
    bloom_bits: dict[str, np.ndarray]  # bf column -> (n, bits) bool, all-False where null
    bloom_null: dict[str, np.ndarray]  # bf column -> (n,) bool


def _bits_from_text(texts: pd.Series, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    null = texts.isna().to_numpy()
    filled = texts.fillna("0" * nbits).astype(str)
    joined = "".join(filled.tolist()).encode("ascii")
    arr = (np.frombuffer(joined, dtype=np.uint8) - 48).astype(bool)
    return arr.reshape(len(texts), nbits), null


def load_hub(warehouse: Path, spec: dict[str, Any] | None = None) -> HubData:
    """Everything the hub's warehouse holds that the attacks use (read-only)."""
    spec = spec or load_encoding_spec()
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        cols = [r[0] for r in con.execute("DESCRIBE identifiers").fetchall()]
        bf = [c for c in cols if c.startswith("bf_")]
        sel = ", ".join(f'"{c}"::VARCHAR AS "{c}"' if c in bf else f'"{c}"' for c in cols)
        rec = con.execute(f"SELECT {sel} FROM identifiers ORDER BY agency, record_ref").df()
        pay = con.execute(
            "SELECT record_ref, agency, year_group FROM payload WHERE year_group IS NOT NULL"
        ).df()
    finally:
        con.close()
    rec = rec.merge(
        pay.drop_duplicates(["agency", "record_ref"]), how="left", on=["agency", "record_ref"]
    )
    bits, nulls = {}, {}
    for c in bf:
        conf = spec["bloom"]["columns"].get(c)
        nb = (
            (int(conf["bits"]) >> int(conf.get("fold", 0)))
            if conf
            else len(rec[c].dropna().iloc[0])
        )
        bits[c], nulls[c] = _bits_from_text(rec[c], nb)
    return HubData(rec, bits, nulls)


# --------------------------------------------------------------------------- ground truth


def record_persons(run: Path, hub: HubData) -> np.ndarray:
    """Evaluation only: the true person id of each hub record (-1 if not found), by
    decrypting record_refs with each agency's own ref key and joining ground truth."""
    gt = pd.read_parquet(
        Path(run) / "population" / "ground_truth" / "records.parquet",
        columns=["agency", "record_id", "person_id"],
    )
    gt["record_id"] = gt["record_id"].astype(str)
    ids = np.empty(len(hub.records), dtype=object)
    for agency, idx in hub.records.groupby("agency").indices.items():
        keys = KeyStore(Path(run) / "agency" / agency / "keys", agency).ref_keys()
        refs = hub.records["record_ref"].to_numpy()[idx]
        ids[idx] = [decrypt_record_ref(r, keys) for r in refs]
    df = pd.DataFrame({"agency": hub.records["agency"], "record_id": ids.astype(str)})
    out = df.merge(
        gt.drop_duplicates(["agency", "record_id"]), how="left", on=["agency", "record_id"]
    )["person_id"]
    return out.fillna(-1).astype(np.int64).to_numpy()


def population_plaintext(run: Path) -> pd.DataFrame:
    """True identifiers of every person of the population (current address), normalised
    the way the bridge normalises: the universe the attacker's reference set is drawn from."""
    gt = Path(run) / "population" / "ground_truth"
    persons = pd.read_parquet(gt / "persons.parquet")
    hist = pd.read_parquet(gt / "address_history.parquet")
    addr = pd.read_parquet(gt / "addresses.parquet")
    current = hist[hist["date_to"].isna()].drop_duplicates("household_id")
    cur = current.merge(addr, on="address_id")[
        ["household_id", "address_line_1", "town", "postcode"]
    ]
    p = persons.merge(cur, how="left", on="household_id")
    raw = (
        pd.DataFrame(
            {
                "record_id": p["person_id"].astype(str),
                "given_name": p["given_name"],
                "middle_names": p["middle_names"],
                "family_name": p["family_name"],
                "other_names": p["other_names"],
                "date_of_birth": pd.to_datetime(p["date_of_birth"]).dt.strftime("%Y-%m-%d"),
                "sex": p["sex"],
                "address_line_1": p["address_line_1"],
                "town": p["town"],  # public: the post town of a postcode
                "postcode": p["postcode"],
                "phone": p["mobile"],
            }
        )
        .astype(object)
        .where(lambda f: f.notna(), None)
    )
    norm = normalise_identifiers(raw, ["%Y-%m-%d"]).frame
    norm.index = p["person_id"].to_numpy()
    return norm


def sample_reference(person_ids: np.ndarray, overlap: float, seed: int) -> np.ndarray:
    """The persons the attacker holds plaintext for: `overlap` of the population."""
    rng = np.random.default_rng(seed)
    ids = np.unique(person_ids)
    n = max(1, int(round(overlap * len(ids))))
    return np.sort(rng.choice(ids, size=n, replace=False))


# --------------------------------------------------------------------------- preimages


def _dummy_encoder(spec: dict[str, Any]) -> Encoder:
    # The preimage code needs no key; a throwaway key keeps Encoder's constructor happy.
    return Encoder(LinkKey(version=1, secret=b"\0" * 32), spec)


def preimage(spec: dict[str, Any], frame: pd.DataFrame, column: str) -> np.ndarray:
    """The plaintext string each row's `column` encodes (None where missing): the bridge's own
    value-building code, so the attacker's guesses and the truth are in the bridge's form.
    A public spec + public code give the attacker exactly this."""
    enc = _dummy_encoder(spec)
    for section in ("tokens", "blocking", "bloom"):
        col = ((spec.get(section) or {}).get("columns") or {}).get(column)
        if col is None:
            continue
        if section == "bloom":
            parts = [
                enc._source(frame, s, {**col, "compact": False})
                for s in col.get("sources") or [col["source"]]
            ]
            vals = []
            for c, u in parts:
                vals.append(np.where(c >= 0, np.append(u, None)[c], None))
            salt = None
            if col.get("salt"):
                sc, su = enc.salt_source(frame, col)
                salt = np.where(sc >= 0, np.append(su, None)[sc], None)
            out = np.empty(len(frame), dtype=object)
            for i in range(len(frame)):
                row = [v[i] for v in vals]
                if all(r is None for r in row) or (col.get("salt_required") and salt[i] is None):
                    out[i] = None
                    continue
                out[i] = SEP.join("" if r is None else str(r) for r in row)
                if salt is not None:  # the salt is part of what the filter encodes
                    out[i] += f"{SALT}{'' if salt[i] is None else salt[i]}"
            return out
        codes, uniq = enc._combined(frame, col)
        return np.where(codes >= 0, np.append(uniq, None)[codes], None)
    raise KeyError(column)


def public_name_table(kind: str) -> pd.Series:
    """Census-style frequency table from the generator's published name lists (rank order +
    Zipf weights): normalised name -> expected share."""
    from synthetic_data.names import FEMALE, MALE, SURNAMES, zipf_weights

    if kind == "given_name":
        names = FEMALE + MALE
        w = np.concatenate([zipf_weights(len(FEMALE)), zipf_weights(len(MALE))]) / 2
    else:
        names, w = SURNAMES, zipf_weights(len(SURNAMES), 0.9)
    keys = []
    for n in names:
        v = normalise_name_value(n) or ""
        keys.append(v.replace(" ", "") if kind == "family_name" else v.split()[0])
    return pd.Series(w, index=keys).groupby(level=0).sum().sort_values(ascending=False)


NAME_SOURCES = {
    "given_name": "given_name",
    "given_name_canonical": "given_name",
    "given_name_phonetic": "given_name",
    "family_name": "family_name",
    "family_name_phonetic": "family_name",
    "family_name_parts": "family_name",
}
DOB_SALTS = ("dob_year", "dob_ym", "dob_iso")


def _public_names_by_sex(kind: str, sex_shares: pd.Series) -> pd.Series:
    """(name, sex) -> expected share: given names from the generator's female / male lists,
    family names independent of sex (census sex ratio `sex_shares`: "F"/"M" -> share)."""
    from synthetic_data.names import FEMALE, MALE, zipf_weights

    if kind != "given_name":
        t = public_name_table(kind)
        return pd.concat({s: t * float(w) for s, w in sex_shares.items()}).swaplevel()
    parts = {}
    for sex, names in (("F", FEMALE), ("M", MALE)):
        keys = [(normalise_name_value(n) or "").split()[0] for n in names]
        w = zipf_weights(len(names)) * float(sex_shares.get(sex, 0.5))
        parts[sex] = pd.Series(w, index=keys).groupby(level=0).sum()
    return pd.concat(parts).swaplevel()


def public_column_table(
    spec: dict[str, Any],
    column: str,
    dob_shares: pd.Series,
    sex_shares: pd.Series | None = None,
) -> pd.Series | None:
    """Census-style table for any single-name column (token or Bloom filter, salted with a part
    of the DOB or not): public names x the public age structure, pushed through the bridge's
    own preimage code (so canonical forms, phonetic codes and salts come out exactly as the
    bridge makes them). `dob_shares`: ISO date -> share of the population born that day (an
    attacker takes it from ONS births by day); `sex_shares` ("F"/"M" -> share, default
    half each) for a column salted with sex. None when the column is not one name."""
    col = None
    for section in ("tokens", "bloom"):
        col = ((spec.get(section) or {}).get("columns") or {}).get(column) or col
    if col is None:
        return None
    sources = list(col.get("sources") or [col["source"]])
    salt = col.get("salt")
    names = [s for s in sources if s in NAME_SOURCES]
    salts = [s for s in sources if s not in NAME_SOURCES] + (
        [salt] if isinstance(salt, str) else list(salt or [])
    )
    if len(names) != 1 or not set(salts) <= {*DOB_SALTS, "sex"}:
        return None
    kind = NAME_SOURCES[names[0]]
    by_sex = "sex" in salts
    salts = [s for s in salts if s != "sex"]
    if by_sex:  # names x sex, carried as "name<SEP>sex" until the frame is built
        shares = sex_shares if sex_shares is not None else pd.Series({"F": 0.5, "M": 0.5})
        t = _public_names_by_sex(kind, shares)
        table = pd.Series(t.to_numpy(), index=[f"{n}{SEP}{x}" for n, x in t.index])
    else:
        table = public_name_table(kind)
    if salts:  # one row per (name, birth date) at the salt's own resolution
        if "dob_iso" not in salts:
            width = 7 if "dob_ym" in salts else 4
            dob_shares = dob_shares.groupby(dob_shares.index.str[:width]).sum()
            dob_shares.index = [d + ("-01" if width == 7 else "-01-01") for d in dob_shares.index]
        dates = dob_shares.index.to_numpy()
        raw = pd.DataFrame(
            {
                kind: np.repeat(table.index.to_numpy(), len(dates)),
                "date_of_birth": np.tile(dates, len(table)),
            }
        )
        weight = np.outer(table.to_numpy(), dob_shares.to_numpy()).ravel()
    else:
        raw = pd.DataFrame({kind: table.index.to_numpy()})
        weight = table.to_numpy()
    if by_sex:
        raw[[kind, "sex"]] = raw[kind].str.split(SEP, n=1, expand=True)
    other = "family_name" if kind == "given_name" else "given_name"
    raw[other] = "x"
    pre = pd.Series(preimage(spec, _normalised(raw), column), dtype=object)
    return pd.Series(weight).groupby(pre.to_numpy()).sum().sort_values(ascending=False)


_NORMALISED: dict[tuple[int, ...], pd.DataFrame] = {}


def _normalised(raw: pd.DataFrame) -> pd.DataFrame:
    """The bridge's normalisation of a public table, once per distinct table: the name
    columns salted alike share one (names x every birth date is the costly part)."""
    hashes = pd.util.hash_pandas_object(raw, index=False).to_numpy()
    key = (len(raw), hash(tuple(raw.columns)), int(hashes.sum()), int((hashes >> 7).sum()))
    if key not in _NORMALISED:
        if len(_NORMALISED) > 8:
            _NORMALISED.clear()
        _NORMALISED[key] = normalise_identifiers(raw.astype(object), ["%Y-%m-%d"]).frame
    return _NORMALISED[key]


def bridge_and_ingest(run: Path, *, people: int, seed: int) -> None:
    """A real partnership run up to the hub's warehouse: population, keys, every agency's bridge
    (ig_bridge.split.run_bridge), hub ingest. No linkage: the attacks need only what is held."""
    from ig_bridge.split import run_bridge
    from linkage.config import HubPaths
    from linkage.ingest import ingest_landing
    from schemas.mapping import load_all_mappings
    from synthetic_data.generate import generate_population
    from synthetic_data.parties import provision_partnership

    run = Path(run)
    pop = run / "population"
    if not (pop / "population.json").exists():
        generate_population(pop, seed, people)
    root = Path(__file__).resolve().parents[2]
    mappings = load_all_mappings(root / "schemas" / "agencies")
    codes = sorted(p.name for p in (pop / "extracts").iterdir() if p.name in mappings)
    provision_partnership(run, codes)
    for code in codes:
        extract = next(p for p in sorted((pop / "extracts" / code).iterdir()) if p.is_file())
        run_bridge(extract, mappings[code].path, run / "agency" / code, run / "landing")
    report = ingest_landing(HubPaths.for_run(run).ensure())
    if report.refused:
        raise RuntimeError(f"hub refused batches: {[o.reason_code for o in report.refused]}")
