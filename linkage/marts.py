"""Analyst marts: a separate DuckDB file built fresh each run from the warehouse.

Row-level tables carry hub ids (person_id, household_id, network_id), bands and flags only:
never record refs, tokens, Bloom encodings, property keys or free text. Every aggregate table
goes through `linkage.disclosure` (small-number suppression, totals from published cells), and
`mart_catalog` records which is which so `python -m linkage.disclosure check` can verify it.

Enrichment flags are the transparent rules in schemas/enrichment_flags.yaml, evaluated over the
structured payload fields and a keyword lexicon over the (bridge-scrubbed) free text; only the
resulting yes/no flags leave this module.

The hub holds no dates of birth or sexes in clear (only keyed tokens), so the age band is
inferred from structured payload (health-visiting caseload = 0-4, school year group, tenancy
role = adult) and the marts carry no sex band: publishing one would need the hub to learn sex.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml

from linkage.disclosure import DEFAULT_THRESHOLD, register_rows, write_aggregate
from linkage.warehouse import payload_column_types

AGE_BANDS = ("0-4", "5-10", "11-15", "16-17", "18+", "unknown")
# Where each band comes from, for the age_bands lookup table (bands sort by age, not as text).
AGE_BAND_SOURCES = {
    "0-4": "on a health-visiting caseload (HV visit_type)",
    "5-10": "school year group Reception to 5 (SCH year_group)",
    "11-15": "school year group 6 to 10 (SCH year_group)",
    "16-17": "school year group 11 to 13 (SCH year_group)",
    "18+": "lead or joint tenant (HSG tenure_role), or else a parent, step-parent, carer, "
    "guardian or grandparent of someone in the family network (family_edge; indicative: "
    "a parent may be 16 or 17)",
    "unknown": "no linked record carries an age-bearing payload field and the person is no "
    "one's parent or carer in the family network: the hub never holds a date of "
    "birth, and GP, police, early-help and social-care extracts send none",
}
# Relationships (family_edge) that make the related person an adult, for the age band; a
# 'child' edge is the other way round: the record's subject is the parent.
ADULT_RELATIONSHIPS = (
    "mother",
    "father",
    "parent",
    "step_parent",
    "carer",
    "guardian",
    "grandparent",
)
SIZE_BANDS = ((1, "1"), (2, "2"), (4, "3-4"), (6, "5-6"), (10**9, "7+"))

# (fact, SQL condition over payload p). Counts of records, by agency and event month.
FACTS: list[tuple[str, str]] = [
    ("referral", "p.referral_reason IS NOT NULL"),
    ("plan_CIN", "p.plan_type = 'CIN'"),
    ("plan_CP", "p.plan_type = 'CP'"),
    ("plan_LAC", "p.plan_type = 'LAC'"),
    ("incident", "p.incident_type IS NOT NULL"),
    ("da_notification", "p.domestic_abuse"),
    ("tenancy", "p.tenancy_type IS NOT NULL"),
    ("arrears_none", "p.arrears_amount = 0"),
    ("arrears_1_499", "p.arrears_amount > 0 AND p.arrears_amount < 500"),
    ("arrears_500_999", "p.arrears_amount >= 500 AND p.arrears_amount < 1000"),
    ("arrears_1000_plus", "p.arrears_amount >= 1000"),
    ("eviction_risk", "p.eviction_risk"),
    ("school_exclusion", "p.exclusions > 0"),
    ("free_school_meals", "p.free_school_meals"),
    ("hv_visit", "p.visit_type IS NOT NULL"),
    ("gp_registration", "p.registration_status IS NOT NULL"),
    ("eh_assessment", "p.assessment_type IS NOT NULL"),
    ("consent_record", "p.consent_status IS NOT NULL"),
]
EVENT_DATE = "coalesce(p.event_date, p.plan_start, p.tenancy_start, p.consent_date)"


class MartsError(ValueError):
    """Bad enrichment rules or warehouse state; names the file and key."""


# --------------------------------------------------------------------------- enrichment rules


@dataclass(frozen=True)
class FlagRule:
    name: str
    doc: str
    when: tuple[dict[str, Any], ...]
    keywords: tuple[str, ...]

    def describe(self) -> str:
        parts = []
        for c in self.when:
            op = next(k for k in c if k != "field")
            parts.append(f"{c['field']} {op} {c[op]}")
        if self.keywords:
            parts.append("notes mention " + " | ".join(self.keywords))
        return " OR ".join(parts)


@dataclass(frozen=True)
class FlagRules:
    version: int
    text_fields: tuple[str, ...]
    flags: tuple[FlagRule, ...] = field(default_factory=tuple)


_OPS = {"equals", "in", "at_least", "below"}


def load_flag_rules(path: Path | str | None = None) -> FlagRules:
    if path is None:
        src = "schemas/enrichment_flags.yaml"
        text = resources.files("schemas").joinpath("enrichment_flags.yaml").read_text("utf-8")
    else:
        src, text = str(path), Path(path).read_text("utf-8")
    doc = yaml.safe_load(text) or {}
    fields = payload_column_types()
    text_fields = tuple(doc.get("text_fields") or ())
    for f in text_fields:
        if fields.get(f) != "VARCHAR":
            raise MartsError(f"{src}: text_fields: {f!r} is not a payload text field")
    flags = []
    for name, spec in (doc.get("flags") or {}).items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)):
            raise MartsError(f"{src}: flags.{name}: flag names are lower_snake_case")
        when = tuple(spec.get("when") or ())
        for i, cond in enumerate(when):
            ops = set(cond) - {"field"}
            if cond.get("field") not in fields:
                raise MartsError(f"{src}: flags.{name}.when[{i}].field: not a payload field")
            if len(ops) != 1 or not ops <= _OPS:
                raise MartsError(f"{src}: flags.{name}.when[{i}]: exactly one of {sorted(_OPS)}")
        kws = tuple(str(k) for k in spec.get("keywords") or ())
        if not when and not kws:
            raise MartsError(f"{src}: flags.{name}: needs `when` or `keywords`")
        flags.append(FlagRule(str(name), str(spec.get("doc", "")), when, kws))
    return FlagRules(int(doc.get("version", 1)), text_fields, tuple(flags))


def _condition(df: pd.DataFrame, cond: dict[str, Any]) -> pd.Series:
    col = df[cond["field"]]
    if "equals" in cond:
        return (col == cond["equals"]).fillna(False).astype(bool)
    if "in" in cond:
        wanted = {str(v).casefold() for v in cond["in"]}
        return col.astype("string").str.casefold().isin(wanted).fillna(False).astype(bool)
    num = pd.to_numeric(col, errors="coerce")
    if "at_least" in cond:
        return (num >= float(cond["at_least"])).fillna(False).astype(bool)
    return (num < float(cond["below"])).fillna(False).astype(bool)


def evaluate_flags(records: pd.DataFrame, rules: FlagRules) -> pd.DataFrame:
    """records: person_id + payload columns. Returns distinct (person_id, flag, source) where
    source is 'structured' or 'text'."""
    out = []
    for rule in rules.flags:
        hit = pd.Series(False, index=records.index)
        for cond in rule.when:
            hit |= _condition(records, cond)
        structured = hit.copy()
        if rule.keywords and rules.text_fields:
            rx = r"\b(?:" + "|".join(re.escape(k) for k in rule.keywords) + r")\b"
            for f in rules.text_fields:
                hit |= (
                    records[f]
                    .astype("string")
                    .str.contains(rx, case=False, regex=True)
                    .fillna(False)
                    .astype(bool)
                )
        sel = records.loc[hit, ["person_id"]].assign(flag=rule.name, source="text")
        sel.loc[structured[hit].to_numpy(), "source"] = "structured"
        out.append(sel)
    if not out:
        return pd.DataFrame(columns=["person_id", "flag", "source"])
    res = pd.concat(out, ignore_index=True)
    # a person flagged by a structured field anywhere counts as structured
    res = res.sort_values(["person_id", "flag", "source"]).drop_duplicates(["person_id", "flag"])
    return res.reset_index(drop=True)


# --------------------------------------------------------------------------- build


@dataclass
class MartsSummary:
    run_id: str
    path: str
    threshold: int
    rows: dict[str, int]
    cells_suppressed: dict[str, int]


def _size_band(n: int) -> str:
    return next(label for top, label in SIZE_BANDS if n <= top)


def _age_bands(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    # Weakest evidence last: a parent or carer in the current family network is an adult.
    adults = ""
    if _table_exists(con, "family_edge"):
        rels = ", ".join(f"'{r}'" for r in ADULT_RELATIONSHIPS)
        adults = f"""
            UNION ALL
            SELECT related_person_id, '18+', 4 FROM family_edge
            WHERE relationship IN ({rels}) AND related_person_id IS NOT NULL
            UNION ALL
            SELECT subject_person_id, '18+', 4 FROM family_edge WHERE relationship = 'child'"""
    return con.execute(f"""
        WITH ev AS (
            SELECT rp.person_id,
                CASE
                    WHEN p.visit_type IS NOT NULL THEN '0-4'
                    WHEN p.year_group IS NOT NULL THEN
                        CASE WHEN upper(trim(p.year_group)) IN ('R', 'N', 'RECEPTION') THEN '5-10'
                             WHEN TRY_CAST(regexp_extract(p.year_group, '\\d+') AS INT) <= 5
                                 THEN '5-10'
                             WHEN TRY_CAST(regexp_extract(p.year_group, '\\d+') AS INT) <= 10
                                 THEN '11-15'
                             WHEN TRY_CAST(regexp_extract(p.year_group, '\\d+') AS INT) <= 13
                                 THEN '16-17'
                        END
                    WHEN p.tenure_role IN ('lead_tenant', 'joint_tenant') THEN '18+'
                END AS band,
                CASE WHEN p.visit_type IS NOT NULL THEN 1
                     WHEN p.year_group IS NOT NULL THEN 2 ELSE 3 END AS strength
            FROM payload p JOIN record_person rp USING (record_ref){adults})
        SELECT person_id, band AS age_band FROM ev WHERE band IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY person_id ORDER BY strength, band) = 1
        """).df()


def _table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchone()[0]
    )


def _consent_coverage(con: duckdb.DuckDBPyConnection, at: dt.date) -> pd.DataFrame:
    """Persons known to each agency, by consent purpose and current consent state (the
    governance registry's rules: latest wins, withdrawals anywhere veto)."""
    from governance.consent import ConsentRegistry

    events = con.execute("""
        SELECT rp.person_id, p.agency, p.consent_purpose, p.consent_status, p.consent_date
        FROM payload p JOIN record_person rp USING (record_ref)
        WHERE p.consent_status IS NOT NULL AND p.consent_purpose IS NOT NULL
          AND p.consent_date IS NOT NULL""").df()
    if events.empty:
        return pd.DataFrame(columns=["purpose", "agency", "state", "n"])
    reg = ConsentRegistry.from_frame(events, source="warehouse payload consent fields")
    known = con.execute("SELECT DISTINCT person_id, agency FROM record_person").df()
    rows = []
    for purpose in sorted(events["consent_purpose"].unique()):
        for pid, agency in known.itertuples(index=False):
            rows.append((purpose, agency, reg.state(pid, purpose, agency, at).status.value))
    df = pd.DataFrame(rows, columns=["purpose", "agency", "state"])
    return df.groupby(["purpose", "agency", "state"]).size().rename("n").reset_index()


def _complete(df: pd.DataFrame, dims: list[str], values: dict[str, list[str]]) -> pd.DataFrame:
    """Explicit zero cells for every combination, so a missing row never hides a small count."""
    levels = [values.get(d) or sorted(df[d].dropna().astype(str).unique()) for d in dims]
    idx = pd.MultiIndex.from_product(levels, names=dims)
    d2 = df.assign(**{d: df[d].astype(str) for d in dims})
    return d2.set_index(dims)["n"].reindex(idx, fill_value=0).reset_index()


def collect(
    con: duckdb.DuckDBPyConnection, rules: FlagRules | None = None, at: dt.date | None = None
) -> dict[str, pd.DataFrame]:
    """Every mart table as a DataFrame (aggregates not yet suppressed)."""
    rules = rules or load_flag_rules()
    at = at or dt.date.today()
    persons = con.execute("""
        SELECT p.person_id, p.n_agencies,
               (SELECT min(m.household_id) FROM household_member m
                WHERE m.person_id = p.person_id) AS household_id,
               (SELECT min(f.network_id) FROM family_network f
                WHERE f.person_id = p.person_id) AS family_network_id
        FROM person p WHERE p.status = 'active' ORDER BY p.person_id""").df()
    ages = _age_bands(con).set_index("person_id")["age_band"]
    persons["age_band"] = persons["person_id"].map(ages).fillna("unknown")
    persons["age_band_order"] = persons["age_band"].map(AGE_BANDS.index).astype("int32")
    persons = persons[
        [
            "person_id",
            "age_band",
            "age_band_order",
            "n_agencies",
            "household_id",
            "family_network_id",
        ]
    ]
    age_bands = pd.DataFrame(
        {
            "age_band": list(AGE_BANDS),
            "age_band_order": list(range(len(AGE_BANDS))),
            "inferred_from": [AGE_BAND_SOURCES[b] for b in AGE_BANDS],
        }
    )
    households = con.execute("""
        SELECT household_id, n_members, n_agencies FROM household WHERE status = 'active'
        ORDER BY household_id""").df()
    households["size_band"] = households["n_members"].map(_size_band)
    households = households[["household_id", "size_band", "n_agencies"]]
    involvement = con.execute(f"""
        SELECT rp.person_id, rp.agency, count(DISTINCT rp.record_ref) AS n_records,
               strftime(min({EVENT_DATE}), '%Y-%m') AS first_event_month,
               strftime(max({EVENT_DATE}), '%Y-%m') AS last_event_month
        FROM record_person rp LEFT JOIN payload p USING (record_ref)
        GROUP BY ALL ORDER BY 1, 2""").df()
    hh_inv = con.execute(f"""
        SELECT m.household_id, rp.agency, count(DISTINCT rp.person_id) AS n_members_involved,
               strftime(min({EVENT_DATE}), '%Y-%m') AS first_event_month,
               strftime(max({EVENT_DATE}), '%Y-%m') AS last_event_month
        FROM household_member m JOIN record_person rp USING (person_id)
        LEFT JOIN payload p USING (record_ref)
        GROUP BY ALL ORDER BY 1, 2""").df()
    needed = sorted({c["field"] for r in rules.flags for c in r.when} | set(rules.text_fields))
    cols = ", ".join(f'p."{c}"' for c in needed)
    recs = con.execute(f"""SELECT rp.person_id, {cols} FROM payload p
                           JOIN record_person rp USING (record_ref)""").df()
    flags = evaluate_flags(recs, rules)
    flag_rules = pd.DataFrame(
        [(r.name, r.doc, r.describe()) for r in rules.flags],
        columns=["flag", "description", "rule"],
    )

    facts_sql = " UNION ALL ".join(
        f"SELECT p.agency, strftime({EVENT_DATE}, '%Y-%m') AS month, '{name}' AS fact "
        f"FROM payload p JOIN record_person rp USING (record_ref) WHERE {cond}"
        for name, cond in FACTS
    )
    facts = con.execute(f"""SELECT agency, coalesce(month, 'unknown') AS month, fact,
                                   count(*) AS n FROM ({facts_sql}) GROUP BY ALL""").df()
    agg: dict[str, pd.DataFrame] = {}
    if not facts.empty:
        # only the months and facts an agency actually reports form its grid
        parts = [
            _complete(g, ["month", "fact"], {}).assign(agency=a) for a, g in facts.groupby("agency")
        ]
        agg["agg_payload_facts"] = pd.concat(parts)[["agency", "month", "fact", "n"]]
    agg["agg_persons"] = _complete(
        persons.groupby(["age_band", "n_agencies"]).size().rename("n").reset_index(),
        ["age_band", "n_agencies"],
        {"age_band": list(AGE_BANDS)},
    )
    agg["agg_households"] = _complete(
        households.groupby(["size_band", "n_agencies"]).size().rename("n").reset_index(),
        ["size_band", "n_agencies"],
        {"size_band": [b for _, b in SIZE_BANDS]},
    )
    inv_age = involvement.merge(persons[["person_id", "age_band"]], on="person_id")
    agg["agg_agency_involvement"] = _complete(
        inv_age.groupby(["agency", "age_band"])["person_id"].nunique().rename("n").reset_index(),
        ["agency", "age_band"],
        {"age_band": list(AGE_BANDS)},
    )
    fl = flags.merge(persons[["person_id", "age_band"]], on="person_id")
    if not fl.empty:
        agg["agg_flags"] = _complete(
            fl.groupby(["flag", "age_band"]).size().rename("n").reset_index(),
            ["flag", "age_band"],
            {"flag": [r.name for r in rules.flags], "age_band": list(AGE_BANDS)},
        )
    consent = _consent_coverage(con, at)
    if not consent.empty:
        agg["agg_consent_coverage"] = _complete(
            consent,
            ["purpose", "agency", "state"],
            {"state": ["given", "refused", "withdrawn", "none"]},
        )
    return {
        "persons": persons,
        "age_bands": age_bands,
        "households": households,
        "agency_involvement": involvement,
        "household_involvement": hh_inv,
        "person_flags": flags[["person_id", "flag", "source"]],
        "flag_rules": flag_rules,
        **agg,
    }


DESCRIPTIONS = {
    "persons": "One row per active linked person: pseudonymous ids, inferred age band, flags "
    "in person_flags. No sex band: the hub holds sex only as a keyed token.",
    "age_bands": "The age bands in age order (join on age_band, ORDER BY age_band_order) and "
    "what each is inferred from.",
    "households": "One row per active household: size band and number of agencies involved.",
    "agency_involvement": "Person x agency: records and first/last event month.",
    "household_involvement": "Household x agency: members involved and first/last event month.",
    "person_flags": "Enrichment flags per person (rules in flag_rules); source says whether a "
    "structured field or the notes lexicon raised it.",
    "flag_rules": "The transparent enrichment rules (schemas/enrichment_flags.yaml).",
    "agg_payload_facts": "Records by agency, event month and fact (referrals, plans, incidents, "
    "DA notifications, arrears bands...).",
    "agg_persons": "Active persons by age band and number of agencies.",
    "agg_households": "Households by size band and number of agencies.",
    "agg_agency_involvement": "Persons known to each agency, by age band.",
    "agg_flags": "Persons with each flag, by age band.",
    "agg_consent_coverage": "Persons known to each agency by consent purpose and current state.",
}
ROW_TABLES = (
    "persons",
    "age_bands",
    "households",
    "agency_involvement",
    "household_involvement",
    "person_flags",
    "flag_rules",
)


def build_marts(
    con: duckdb.DuckDBPyConnection,
    marts_path: Path | str,
    run_id: str,
    threshold: int = DEFAULT_THRESHOLD,
    rules: FlagRules | None = None,
    at: dt.date | None = None,
) -> MartsSummary:
    """Build the analyst marts file from an open warehouse connection. Written to a temporary
    file and renamed into place, so analysts never see a half-built marts file."""
    marts_path = Path(marts_path)
    marts_path.parent.mkdir(parents=True, exist_ok=True)
    tables = collect(con, rules, at)
    tmp = marts_path.with_name(f".{marts_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    out = duckdb.connect(str(tmp))
    rows: dict[str, int] = {}
    suppressed: dict[str, int] = {}
    try:
        for name, df in tables.items():
            if name in ROW_TABLES:
                out.register("_t", df)
                out.execute(f'CREATE TABLE "{name}" AS SELECT * FROM _t')
                out.unregister("_t")
                register_rows(out, name, threshold, run_id, DESCRIPTIONS[name])
            else:
                dims = [c for c in df.columns if c != "n"]
                suppressed[name] = write_aggregate(
                    out, name, df, dims, threshold, run_id, DESCRIPTIONS[name]
                )
            rows[name] = len(df)
        out.execute(
            "CREATE TABLE mart_build AS SELECT ? AS run_id, now() AS built_at, ? AS threshold",
            [run_id, threshold],
        )
        register_rows(out, "mart_build", threshold, run_id, "When and from which run.")
        out.execute("CHECKPOINT")
    finally:
        out.close()
    os.chmod(tmp, 0o600)  # hub-private until published (docs/analyst_guide.md)
    os.replace(tmp, marts_path)
    return MartsSummary(run_id, str(marts_path), threshold, rows, suppressed)
