"""Where the linkage evaluation's losses come from (evaluation only: ground truth and the
agencies' own plaintext, never the hub). Every figure is a count by kind: no identifier, ref
or value leaves these functions, so the breakdown may sit in linkage_quality.json.

- records lost at the bridge, by the bridge report's reason;
- missed true person pairs, by stage (never a candidate pair / scored below the auto-match
  threshold / above it but held back or cut by a guard) and by which identifying fields
  differ between the two records (plaintext, normalised as the bridge does);
- household errors by kind: missed pairs (a record not placed, one person split in two,
  placed at different properties, one property split as group quarters) and false pairs
  (a false person match, one property shared by two households).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Fields compared for the 'which fields differ' signature of a missed pair.
SIGNATURE_FIELDS = (
    "given_name",
    "family_name",
    "date_of_birth",
    "address_line_1",
    "postcode",
    "nhs_number",
    "phone",
)
TOP_SIGNATURES = 12


def lost_by_reason(run: Path) -> dict[str, int]:
    """Rows quarantined by the bridges, by reason (summed over every agency's reports)."""
    out: Counter[str] = Counter()
    for report in sorted(Path(run).glob("agency/*/reports/*.json")):
        data = json.loads(report.read_text("utf-8"))
        for reason, n in (data.get("reasons") or {}).items():
            out[str(reason)] += int(n)
    return dict(out.most_common())


def _ordered(l_ids: pd.Series, r_ids: pd.Series) -> pd.DataFrame:
    a, b = l_ids.astype(str).to_numpy(), r_ids.astype(str).to_numpy()
    first = a < b
    return pd.DataFrame({"l": np.where(first, a, b), "r": np.where(first, b, a)})


def _signature(x: pd.Series, y: pd.Series, fields: list[str]) -> str:
    parts = []
    for f in fields:
        a, b = x[f], y[f]
        if pd.isna(a) or pd.isna(b):
            if not (pd.isna(a) and pd.isna(b)):
                parts.append(f"{f} missing")
        elif str(a) != str(b):
            parts.append(f)
    return ", ".join(parts) or "(none differ)"


def missed_pairs(
    truth: pd.DataFrame,
    blocked: pd.DataFrame,
    scored: pd.DataFrame,
    plain: pd.DataFrame,
    threshold: float,
) -> dict[str, Any]:
    """Missed true cross-agency pairs by stage and by differing fields.

    truth: unique_id, agency, person_id (true), cluster_id (hub person); blocked/scored:
    unique_id_l, unique_id_r (+ match_probability); plain: the records' normalised plaintext
    by `plain_id` (truth column of the same name)."""
    t = truth[["unique_id", "agency", "person_id", "cluster_id", "plain_id"]]
    p = t.merge(t, on="person_id", suffixes=("_l", "_r"))
    p = p[
        (p["unique_id_l"] < p["unique_id_r"])
        & (p["agency_l"] != p["agency_r"])
        & (p["cluster_id_l"] != p["cluster_id_r"])
    ]
    if p.empty:
        return {"n_missed_cross_agency_pairs": 0, "by_stage": {}, "fields_differing": {}}
    key = _ordered(p["unique_id_l"], p["unique_id_r"]).assign(
        pl=p["plain_id_l"].to_numpy(), pr=p["plain_id_r"].to_numpy()
    )
    cand = _ordered(blocked["unique_id_l"], blocked["unique_id_r"]).drop_duplicates()
    sc = (
        _ordered(scored["unique_id_l"], scored["unique_id_r"])
        .assign(prob=scored["match_probability"].to_numpy())
        .drop_duplicates(["l", "r"])
    )
    key = key.merge(cand.assign(blocked=True), on=["l", "r"], how="left").merge(
        sc, on=["l", "r"], how="left"
    )
    stage = np.where(
        key["blocked"].isna(),
        "not a candidate pair",
        np.where(
            key["prob"].fillna(0) < threshold,
            "scored below the auto-match threshold",
            "above the threshold, held back or cut by a guard",
        ),
    )
    fields = [f for f in SIGNATURE_FIELDS if f in plain.columns]
    pl = plain.set_index("plain_id")
    by_stage: dict[str, Any] = {}
    for name in sorted(set(stage)):
        sel = key[stage == name]
        sigs = Counter(
            _signature(pl.loc[a], pl.loc[b], fields)
            for a, b in zip(sel["pl"], sel["pr"], strict=True)
        )
        by_stage[name] = {
            "pairs": len(sel),
            "fields_differing": dict(sigs.most_common(TOP_SIGNATURES)),
        }
    return {"n_missed_cross_agency_pairs": len(key), "by_stage": by_stage}


def household_errors(records: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Household pair errors by kind, over record pairs.

    records: unique_id, person_id, true_household_id (truth), cluster_id (hub person),
    household_id (hub; None if the person was not placed), property_key (hub)."""
    r = records[
        [
            "unique_id",
            "person_id",
            "true_household_id",
            "cluster_id",
            "household_id",
            "property_key",
        ]
    ]
    missed: Counter[str] = Counter()
    p = r.merge(r, on="true_household_id", suffixes=("_l", "_r"))
    p = p[p["unique_id_l"] < p["unique_id_r"]]
    p = p[
        p["household_id_l"].isna()
        | p["household_id_r"].isna()
        | (p["household_id_l"] != p["household_id_r"])
    ]
    unplaced = p["household_id_l"].isna() | p["household_id_r"].isna()
    split_person = ~unplaced & (p["person_id_l"] == p["person_id_r"])
    same_prop = ~unplaced & ~split_person & (p["property_key_l"] == p["property_key_r"])
    missed["a record's person not placed"] = int(unplaced.sum())
    missed["one person split in two by person linkage"] = int(split_person.sum())
    missed["one property split (group quarters)"] = int(same_prop.sum())
    missed["placed at different properties"] = int((~unplaced & ~split_person & ~same_prop).sum())
    false: Counter[str] = Counter()
    placed = r[r["household_id"].notna()]
    q = placed.merge(placed, on="household_id", suffixes=("_l", "_r"))
    q = q[
        (q["unique_id_l"] < q["unique_id_r"])
        & (q["true_household_id_l"] != q["true_household_id_r"])
    ]
    wrong_person = q["person_id_l"] != q["person_id_r"]
    false["two people linked as one person"] = int(
        (wrong_person & (q["cluster_id_l"] == q["cluster_id_r"])).sum()
    )
    false["two households at one property"] = int((q["cluster_id_l"] != q["cluster_id_r"]).sum())
    return {"missed_pairs": dict(missed.most_common()), "false_pairs": dict(false.most_common())}
