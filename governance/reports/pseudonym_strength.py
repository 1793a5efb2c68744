"""The IG report's "pseudonym strength" section (issue 16).

Two views, because the hub never has ground truth:
- the measured attack figures for the encoding spec in force (benchmarks/bench_attacks.py on
  the synthetic population, kept in schemas/pseudonym_strength.json with the spec version they
  were measured on; a figure measured on another version is shown as stale);
- a live frequency profile of what this warehouse holds: per encoded column, how many records
  share its most common value. Frequency alignment needs values that many records share, so a
  column whose largest group is a large share of the records is what an attack would start
  from (under spec v2, tok_sex's largest group was ~50% of records; v3's columns are near-unique).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

FIGURES_FILE = "pseudonym_strength.json"
#: A column is flagged when its most common value covers more than this share of records
#: (and more than FLAG_MIN_RECORDS records: a large household is not a frequency profile).
FLAG_SHARE = 0.01
FLAG_MIN_RECORDS = 25


def measured_figures(path: Path | None = None) -> dict[str, Any] | None:
    """The attack figures kept beside the spec (None when never measured)."""
    try:
        text = (
            Path(path).read_text("utf-8")
            if path is not None
            else resources.files("schemas").joinpath(FIGURES_FILE).read_text("utf-8")
        )
    except FileNotFoundError:
        return None
    return json.loads(text)


def frequency_profile(con: duckdb.DuckDBPyConnection, columns: list[str]) -> list[dict[str, Any]]:
    """Per encoded column of `identifiers`: records holding a value, distinct values, and the
    largest group of records sharing one value (count and share). Counts only: no value."""
    have = {r[0] for r in con.execute("DESCRIBE identifiers").fetchall()}
    out = []
    for col in columns:
        if col not in have:
            continue
        n, distinct, top = con.execute(f"""
            WITH g AS (SELECT "{col}" AS v, count(*) AS c FROM identifiers
                       WHERE "{col}" IS NOT NULL GROUP BY 1)
            SELECT coalesce(sum(c), 0), count(*), coalesce(max(c), 0) FROM g""").fetchall()[0]
        share = top / n if n else 0.0
        out.append(
            {
                "column": col,
                "records": int(n),
                "distinct": int(distinct),
                "largest_group": int(top),
                "largest_share": share,
                "flag": bool(share > FLAG_SHARE and top > FLAG_MIN_RECORDS),
            }
        )
    return out


def section(
    con: duckdb.DuckDBPyConnection, spec: dict[str, Any], figures: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the report's section shows."""
    version = int(spec["encoding_spec_version"])
    columns = [
        c
        for sec in ("tokens", "blocking", "bloom")
        for c in ((spec.get(sec) or {}).get("columns") or {})
    ]
    figures = figures if figures is not None else measured_figures()
    attacks = None
    if figures:
        by_target: dict[str, float] = {}
        for r in figures.get("results", []):
            if r.get("overlap") in ("100%", "none", "public"):
                key = f"{r['attack']}: {r['target']}"
                by_target[key] = max(by_target.get(key, 0.0), float(r["records"]))
        worst = sorted(by_target.items(), key=lambda kv: -kv[1])[:8]
        attacks = {
            "spec_version": figures.get("encoding_spec_version"),
            "stale": figures.get("encoding_spec_version") != version,
            "people": figures.get("people"),
            "measured_on": figures.get("measured_on"),
            "max_records": max(by_target.values(), default=0.0),
            "worst": [{"attack": k, "records": v} for k, v in worst],
        }
    profile = frequency_profile(con, columns)
    return {
        "spec_version": version,
        "attacks": attacks,
        "profile": profile,
        "flagged": [p["column"] for p in profile if p["flag"]],
    }
