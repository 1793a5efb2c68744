"""The seven synthetic agencies: who each one sees and what it records.

A builder picks the agency's records from the population and returns canonical values;
synthetic_data.extracts corrupts and renders them into the columns of the agency's
`AgencySpec` (synthetic_data.agency_specs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthetic_data import identifiers as ids
from synthetic_data.agency_vocabularies import PRIMARY_SCHOOLS, SECONDARY_SCHOOLS, VOCABULARIES, _v
from synthetic_data.population import Population


@dataclass
class AgencyRecords:
    """Canonical content of one extract before corruption and rendering."""

    subjects: pd.DataFrame  # record_id, person_id, address_id, payload..., _drop cols
    related: dict[str, pd.DataFrame]  # slot -> person_id (-1 = none), relationship; row-aligned
    text_mentions: list[list[str]]  # identifiers written into free text, per record


def _ids(rng: np.random.Generator, prefix: str, n: int, width: int) -> np.ndarray:
    nums = rng.choice(10**width - 10 ** (width - 1), size=n, replace=False) + 10 ** (width - 1)
    return (prefix + pd.Series(nums).astype(str)).to_numpy(dtype=object)


def _days_before(
    rng: np.random.Generator, ref: np.datetime64, lo: int, hi: int, n: int
) -> np.ndarray:
    return (ref - rng.integers(lo, hi, n).astype("timedelta64[D]")).astype("datetime64[s]")


class Ctx:
    """Population views the builders share."""

    def __init__(self, pop: Population) -> None:
        self.pop = pop
        self.p = pop.persons
        self.n = len(self.p)
        hh = pop.households.set_index("household_id")
        self.hid = self.p["household_id"].to_numpy()
        self.tier = hh["need_tier"].to_numpy()[self.hid]
        self.age = self.p["age"].to_numpy()
        self.addr = hh["address_id"].to_numpy()[self.hid]
        self.ref = pop.ref_date
        self.role = self.p["role"].to_numpy()
        self.given = self.p["given_name"].to_numpy(dtype=object)
        self.family = self.p["family_name"].to_numpy(dtype=object)
        self.mobile = self.p["mobile"].to_numpy(dtype=object)
        self._dob_text: np.ndarray | None = None

    @property
    def dob_text(self) -> np.ndarray:
        if self._dob_text is None:
            self._dob_text = self.p["date_of_birth"].dt.strftime("%d/%m/%Y").to_numpy(dtype=object)
        return self._dob_text

    def same_household(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ok = (a >= 0) & (b >= 0)
        return ok & (self.hid[np.maximum(a, 0)] == self.hid[np.maximum(b, 0)])

    def by_tier(
        self,
        rng: np.random.Generator,
        probs: tuple[float, float, float],
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        tier = self.tier if rows is None else self.tier[rows]
        return rng.random(len(tier)) < np.asarray(probs)[tier]

    def household_pick(
        self, rng: np.random.Generator, probs: tuple[float, float, float]
    ) -> np.ndarray:
        """Per-person mask: whole households selected with probability by need tier."""
        hh_tier = self.pop.households["need_tier"].to_numpy()
        chosen = rng.random(len(hh_tier)) < np.asarray(probs)[hh_tier]
        return chosen[self.hid]


def _parents(c: Ctx, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slot 1 = resident parent (mother first); slot 2 = the other parent or a step-parent."""
    m = c.p["mother_id"].to_numpy()[rows]
    f = c.p["father_id"].to_numpy()[rows]
    s = c.p["step_parent_id"].to_numpy()[rows]
    m_home, f_home = c.same_household(m, rows), c.same_household(f, rows)
    p1 = np.where(m_home, m, np.where(f_home, f, np.where(m >= 0, m, f)))
    r1 = np.where(p1 == m, "mother", "father")
    other = np.where(p1 == m, f, m)
    p2 = np.where(other >= 0, other, s)
    r2 = np.where(other >= 0, np.where(other == m, "mother", "father"), "step_parent")
    r1 = np.where(p1 >= 0, r1, None)
    r2 = np.where(p2 >= 0, r2, None)
    return p1, r1.astype(object), p2, r2.astype(object)


def _mention(c: Ctx, i: int, rng: np.random.Generator) -> tuple[str, list[str]]:
    """How a case note names a family member: name, sometimes DOB and phone."""
    name = f"{c.given[i]} {c.family[i]}"
    out, said = name, [name]
    if rng.random() < 0.5:
        out += f" (DOB {c.dob_text[i]})"
        said.append(c.dob_text[i])
    if isinstance(c.mobile[i], str) and rng.random() < 0.4:
        out += f" on {c.mobile[i]}"
        said.append(c.mobile[i])
    return out, said


def _notes(
    c: Ctx,
    rng: np.random.Generator,
    subj: np.ndarray,
    p1: np.ndarray,
    p2: np.ndarray,
    templates: list[str],
    rate: float,
) -> tuple[list[str | None], list[list[str]]]:
    """Free text as practitioners write it: it names the family, their DOBs, phones, postcode."""
    addrs = c.pop.addresses["postcode"].to_numpy(dtype=object)
    texts: list[str | None] = []
    mentions: list[list[str]] = []
    pick = rng.integers(0, len(templates), len(subj))
    keep = rng.random(len(subj)) < rate
    for j, s in enumerate(subj):
        if not keep[j]:
            texts.append(None)
            mentions.append([])
            continue
        child, said = _mention(c, int(s), rng)
        said = list(said)
        adult1 = adult2 = "the family"
        if p1[j] >= 0:
            adult1, more = _mention(c, int(p1[j]), rng)
            said += more
        if p2[j] >= 0:
            adult2, more = _mention(c, int(p2[j]), rng)
            said += more
        pc = addrs[int(c.addr[s])]
        said.append(pc)
        text = templates[pick[j]].format(child=child, adult1=adult1, adult2=adult2, postcode=pc)
        texts.append(text)
        mentions.append([x for x in dict.fromkeys(said) if x in text])  # only what was written
    return texts, mentions


CSC_NOTES = [
    "Referral received. Mum {adult1} called concerned about {child}. Family live at {postcode}."
    " Dad {adult2} not living at the address.",
    "Home visit to {postcode}. {child} seen alone, presented as quiet. {adult1} present;"
    " {adult2} had left before visit. Plan to review in 4 weeks.",
    "Strategy discussion. School report bruising on {child}. Contact made with {adult1}."
    " Police aware of previous incidents involving {adult2}.",
    "{child} did not attend clinic. Attempts to call {adult1} unsuccessful. Letter sent to"
    " {postcode}.",
]
POL_NOTES = [
    "Officers attended {postcode} following call from neighbour. {child} spoken to."
    " Other party {adult1} left prior to arrival.",
    "DA incident. Victim {child} reports verbal abuse by {adult1}. Children present. DASH"
    " completed.",
    "Concern for welfare call re {child}. Address {postcode}. No offences disclosed.",
    "{child} stopped in vehicle. Gave address as {postcode}. Known associate {adult1}.",
]
EH_NOTES = [
    "Family support plan agreed with {adult1}. {child} to be offered mentoring. Review at"
    " {postcode} family hub.",
    "TAF meeting. {adult1} engaged well; {child} attendance improving. {adult2} not present.",
    "Consent discussed with {adult1} for {child}. Leaflet given.",
]


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------
def build_gp(c: Ctx, rng: np.random.Generator) -> AgencyRecords:
    rows = np.flatnonzero(rng.random(c.n) < 0.93)
    n = len(rows)
    dob = c.p["date_of_birth"].to_numpy()[rows]
    reg = np.maximum(_days_before(rng, c.ref, 0, 20 * 365, n), dob)
    practices = np.array([f"B8{k:04d}" for k in rng.choice(9000, 12, replace=False)])
    subj = pd.DataFrame(
        {
            "person_id": rows,
            "record_id": _ids(rng, "P", n, 7),
            "record_type": _v("record_type", "GP")[0],
            "gp_practice": practices[rng.integers(0, 12, n)],
            "event_date": reg,
            "registration_status": np.where(
                rng.random(n) < 0.95, *VOCABULARIES["registration_status"]
            ),
            "_LastUpdatedBy": np.array(["SYSTEM", "RECEPTION", "MIGRATION"])[rng.integers(0, 3, n)],
        }
    )
    return AgencyRecords(subj, {}, [[] for _ in range(n)])


def build_hv(c: Ctx, rng: np.random.Generator) -> AgencyRecords:
    rows = np.flatnonzero((c.age < 5) & (rng.random(c.n) < 0.95))
    n = len(rows)
    mother = c.p["mother_id"].to_numpy()[rows]
    subj = pd.DataFrame(
        {
            "person_id": rows,
            "record_id": _ids(rng, "HV-", n, 6),
            "record_type": _v("record_type", "HV")[0],
            "visit_type": _v("visit_type")[np.clip((c.age[rows] * 2).astype(int), 0, 3)],
            "event_date": _days_before(rng, c.ref, 1, 180, n),
            "immunisations_up_to_date": rng.random(n) < np.where(c.tier[rows] > 0, 0.8, 0.95),
            "_health_visitor": np.array(["HV Team A", "HV Team B", "HV Team C"])[
                rng.integers(0, 3, n)
            ],
        }
    )
    rel = pd.DataFrame({"person_id": mother, "relationship": np.where(mother >= 0, "mother", None)})
    return AgencyRecords(subj, {"mother": rel}, [[] for _ in range(n)])


def build_sch(c: Ctx, rng: np.random.Generator) -> AgencyRecords:
    a = c.age
    rows = np.flatnonzero(
        ((a >= 4) & (a < 16) & (rng.random(c.n) < 0.97))
        | ((a >= 16) & (a < 18) & (rng.random(c.n) < 0.3))
    )
    n = len(rows)
    # Academic-year age on 31 August before the reference date decides the year group.
    dob = pd.to_datetime(c.p["date_of_birth"].to_numpy()[rows])
    ref = pd.Timestamp(c.ref)
    age_sep = (ref.year - 1) - dob.year - ((dob.month > 8).astype(int))
    year = np.clip(age_sep.to_numpy() - 4, 0, 13)
    secondary = year >= 7
    primary_names, secondary_names = list(PRIMARY_SCHOOLS), list(SECONDARY_SCHOOLS)
    sch_idx = np.where(
        secondary, rng.integers(0, len(secondary_names), n), rng.integers(0, len(primary_names), n)
    )
    estab = np.where(secondary, 4000 + sch_idx, 2000 + sch_idx)
    school = np.where(
        secondary,
        np.array(secondary_names, dtype=object)[np.minimum(sch_idx, len(secondary_names) - 1)],
        np.array(primary_names, dtype=object)[sch_idx],
    )
    entry_year = ref.year - 1 - year
    p1, r1, p2, r2 = _parents(c, rows)
    t = c.tier[rows]
    subj = pd.DataFrame(
        {
            "person_id": rows,
            "record_id": _ids(rng, "PUP", n, 6),
            "upn": ids.upns(estab, entry_year),
            "record_type": _v("record_type", "SCH")[0],
            "school_name": school,
            "year_group": np.where(year == 0, "R", pd.Series(year).astype(str)),
            "attendance_pct": np.round(
                np.clip(rng.normal(np.array([95.0, 91.0, 84.0])[t], 4.0), 30, 100), 1
            ),
            "exclusions": rng.poisson(np.array([0.02, 0.2, 0.6])[t]),
            "sen_status": _v("sen_status")[np.searchsorted([0.84, 0.97], rng.random(n))],
            "free_school_meals": rng.random(n) < np.array([0.18, 0.45, 0.7])[t],
        }
    )
    related = {
        "contact1": pd.DataFrame({"person_id": p1, "relationship": r1}),
        "contact2": pd.DataFrame({"person_id": p2, "relationship": r2}),
    }
    return AgencyRecords(subj, related, [[] for _ in range(n)])


def build_csc(c: Ctx, rng: np.random.Generator) -> AgencyRecords:
    kids = np.flatnonzero(c.household_pick(rng, (0.004, 0.12, 0.7)) & (c.age < 18))
    per = 1 + rng.poisson(0.6, len(kids))
    rows = np.repeat(kids, per)
    n = len(rows)
    ref_date = _days_before(rng, c.ref, 1, 5 * 365, n)
    plan = np.array(["none", "CIN", "CP", "LAC"])[np.searchsorted([0.45, 0.8, 0.95], rng.random(n))]
    plan_start = np.where(plan != "none", ref_date + np.timedelta64(30, "D"), np.datetime64("NaT"))
    ended = (plan != "none") & (rng.random(n) < 0.5)
    plan_end = np.where(
        ended, plan_start + rng.integers(60, 600, n).astype("timedelta64[D]"), np.datetime64("NaT")
    )
    kind = pd.Series(plan).map({"none": 0, "CIN": 1, "CP": 2, "LAC": 3}).to_numpy()
    p1, r1, p2, r2 = _parents(c, rows)
    notes, mentions = _notes(c, rng, rows, p1, p2, CSC_NOTES, 0.9)
    subj = pd.DataFrame(
        {
            "person_id": rows,
            "record_id": _ids(rng, "REF", n, 7),
            "_PersonID": ("C" + pd.Series(rows * 7 + 1000003).astype(str)).to_numpy(),
            "event_date": ref_date,
            "record_type": _v("record_type", "CSC")[kind],
            "referral_source": _v("referral_source")[rng.integers(0, 6, n)],
            "referral_reason": _v("referral_reason")[rng.integers(0, 6, n)],
            "plan_type": plan,
            "plan_start": plan_start.astype("datetime64[s]"),
            "plan_end": plan_end.astype("datetime64[s]"),
            "legal_gateway": np.where(plan == "CP", *VOCABULARIES["legal_gateway"]),
            "case_notes": notes,
            "_AllocatedWorker": (
                "SW" + pd.Series(rng.integers(100, 160, n)).astype(str)
            ).to_numpy(),
            "lead_practitioner_contact": _v("lead_practitioner_contact", "CSC")[kind],
        }
    )
    related = {
        "parent1": pd.DataFrame({"person_id": p1, "relationship": r1}),
        "parent2": pd.DataFrame({"person_id": p2, "relationship": r2}),
    }
    return AgencyRecords(subj, related, mentions)


def build_pol(c: Ctx, rng: np.random.Generator) -> AgencyRecords:
    who = np.flatnonzero(c.by_tier(rng, (0.015, 0.10, 0.35)) & (c.age >= 10))
    per = 1 + rng.poisson(0.5, len(who))
    rows = np.repeat(who, per)
    n = len(rows)
    partner = c.p["partner_id"].to_numpy()[rows]
    da = (partner >= 0) & (rng.random(n) < np.array([0.1, 0.4, 0.6])[c.tier[rows]])
    other = np.where(da, partner, -1)
    incident = np.where(da, "Domestic", _v("incident_type")[1:][rng.integers(0, 5, n)])
    notes, mentions = _notes(c, rng, rows, other, np.full(n, -1), POL_NOTES, 0.85)
    subj = pd.DataFrame(
        {
            "person_id": rows,
            "record_id": _ids(rng, "NOM/", n, 8),
            "_OccurrenceRef": (
                "13/" + pd.Series(rng.integers(10000, 99999, n)).astype(str) + "/24"
            ).to_numpy(),
            "event_date": _days_before(rng, c.ref, 1, 4 * 365, n),
            "record_type": np.where(da, *_v("record_type", "POL")),
            "incident_type": incident,
            "domestic_abuse": da,
            "risk_level": np.where(
                da, np.array(["standard", "medium", "high"])[rng.integers(0, 3, n)], "standard"
            ),
            "incident_notes": notes,
            # Police often record an estimated age; the bridge must treat these DOBs as weak.
            "dob_is_estimated": rng.random(n) < 0.08,
        }
    )
    rel = pd.DataFrame({"person_id": other, "relationship": np.where(da, "partner", None)})
    return AgencyRecords(subj, {"other_party": rel}, mentions)


def _relationship_to(c: Ctx, lead: np.ndarray, member: np.ndarray) -> np.ndarray:
    """What `member` is to `lead` (the record's subject)."""
    p = c.p
    m_mother, m_father = p["mother_id"].to_numpy()[member], p["father_id"].to_numpy()[member]
    m_step = p["step_parent_id"].to_numpy()[member]
    l_mother, l_father = p["mother_id"].to_numpy()[lead], p["father_id"].to_numpy()[lead]
    partner = p["partner_id"].to_numpy()[lead]
    return np.select(
        [
            member == partner,
            (m_mother == lead) | (m_father == lead),
            m_step == lead,
            member == l_mother,
            member == l_father,
        ],
        ["partner", "child", "child", "mother", "father"],
        "household_member",
    ).astype(object)


def build_hsg(c: Ctx, rng: np.random.Generator) -> AgencyRecords:
    hh = c.pop.households
    tenant_hh = rng.random(len(hh)) < np.array([0.12, 0.35, 0.55])[hh["need_tier"].to_numpy()]
    first = ~pd.Series(c.hid).duplicated().to_numpy()
    leads = np.flatnonzero(first & tenant_hh[c.hid])
    n = len(leads)
    members = pd.DataFrame({"hid": c.hid, "pid": np.arange(c.n)})
    members = members[~first & tenant_hh[c.hid]]
    members = members.assign(k=members.groupby("hid").cumcount())
    lead_of_hh = pd.Series(np.arange(n), index=c.hid[leads])
    related = {}
    for k in range(4):
        mk = members[members["k"] == k]
        pid = np.full(n, -1, np.int64)
        pos = lead_of_hh.loc[mk["hid"]].to_numpy()
        pid[pos] = mk["pid"].to_numpy()
        rel = np.full(n, None, dtype=object)
        rel[pos] = _relationship_to(c, leads[pos], mk["pid"].to_numpy())
        related[f"member{k + 1}"] = pd.DataFrame({"person_id": pid, "relationship": rel})
    start = hh["moved_in"].to_numpy()[c.hid[leads]]
    t = c.tier[leads]
    arrears = np.where(
        rng.random(n) < np.array([0.15, 0.35, 0.55])[t], np.round(rng.gamma(2.0, 350.0, n), 2), 0.0
    )
    subj = pd.DataFrame(
        {
            "person_id": leads,
            "record_id": _ids(rng, "T", n, 6),
            "_lead_ni_number": (
                "QQ" + pd.Series(rng.integers(100000, 999999, n)).astype(str) + "C"
            ).to_numpy(),
            "tenancy_type": _v("tenancy_type")[np.searchsorted([0.6, 0.75, 0.92], rng.random(n))],
            "tenancy_start": start,
            "tenancy_end": np.full(n, np.datetime64("NaT"), "datetime64[s]"),
            "tenure_role": "lead_tenant",
            "arrears_amount": arrears,
            "record_type": _v("record_type", "HSG")[0],
            "eviction_risk": arrears > 900,
        }
    )
    return AgencyRecords(subj, related, [[] for _ in range(n)])


# Purposes match the partnership protocols' consent_purpose (schemas/protocols/*.yaml).
CONSENT_PURPOSES = np.array(VOCABULARIES["consent_purpose"])


def build_eh(c: Ctx, rng: np.random.Generator) -> AgencyRecords:
    hh_kids = np.bincount(c.hid, weights=(c.age < 18), minlength=len(c.pop.households)) > 0
    fam = c.household_pick(rng, (0.003, 0.3, 0.5)) & hh_kids[c.hid]
    members = np.flatnonzero(fam)
    # one consent decision per member and purpose (1-3 purposes) ...
    n_purp = rng.integers(1, 4, len(members))
    rows = np.repeat(members, n_purp)
    _, k = np.unique(rows, return_index=True)
    purpose_idx = np.arange(len(rows)) - np.repeat(k, n_purp)
    assess = pd.Series(_days_before(rng, c.ref, 30, 3 * 365, len(c.pop.households)))
    a_date = assess.to_numpy()[c.hid[rows]]
    status = np.where(rng.random(len(rows)) < 0.8, "given", "refused")
    consent_date = a_date + rng.integers(0, 14, len(rows)).astype("timedelta64[D]")
    # ... and a later withdrawal as its own row, as case systems record it
    wd = (status == "given") & (rng.random(len(rows)) < 0.15)
    rows = np.concatenate([rows, rows[wd]])
    purpose_idx = np.concatenate([purpose_idx, purpose_idx[wd]])
    a_date = np.concatenate([a_date, a_date[wd]])
    status = np.concatenate([status, np.full(int(wd.sum()), "withdrawn")])
    consent_date = np.concatenate(
        [
            consent_date,
            consent_date[wd] + rng.integers(30, 300, int(wd.sum())).astype("timedelta64[D]"),
        ]
    )
    order = np.lexsort((consent_date, purpose_idx, rows))
    rows, purpose_idx, a_date = rows[order], purpose_idx[order], a_date[order]
    status, consent_date = status[order], consent_date[order]
    n = len(rows)
    first = ~pd.Series(c.hid).duplicated().to_numpy()
    lead_of_hh = np.full(len(c.pop.households), -1, np.int64)
    lead_of_hh[c.hid[first]] = np.flatnonzero(first)
    lead = lead_of_hh[c.hid[rows]]
    lead = np.where(lead == rows, -1, lead)
    rel = np.full(n, None, dtype=object)
    has = lead >= 0
    # relationship of the lead adult to the subject
    rel[has] = _relationship_to(c, rows[has], lead[has])
    notes, mentions = _notes(c, rng, rows, lead, np.full(n, -1), EH_NOTES, 0.4)
    subj = pd.DataFrame(
        {
            "person_id": rows,
            "record_id": _ids(rng, "EH", n, 7),
            "_FamilyRef": ("FAM" + pd.Series(c.hid[rows] * 13 + 50000).astype(str)).to_numpy(),
            "assessment_type": np.where(c.tier[rows] == 2, *VOCABULARIES["assessment_type"]),
            "assessment_outcome": _v("assessment_outcome")[c.hid[rows] % 4],
            "record_type": np.where(c.tier[rows] == 2, *_v("record_type", "EH")[::-1]),
            "event_date": a_date,
            "consent_purpose": CONSENT_PURPOSES[purpose_idx],
            "consent_status": status,
            "consent_date": consent_date.astype("datetime64[s]"),
            "lead_practitioner_contact": _v("lead_practitioner_contact")[c.hid[rows] % 3],
            "case_notes": notes,
        }
    )
    return AgencyRecords(
        subj, {"lead_adult": pd.DataFrame({"person_id": lead, "relationship": rel})}, mentions
    )


BUILDERS: dict[str, Callable[[Ctx, np.random.Generator], AgencyRecords]] = {
    "GP": build_gp,
    "HV": build_hv,
    "SCH": build_sch,
    "CSC": build_csc,
    "POL": build_pol,
    "HSG": build_hsg,
    "EH": build_eh,
}
