"""The `messy` profile: what real agency exports look like, at documented rates.

The default profile is untouched by anything here: `generate_population(profile="default")`
never calls this module, so the same seed gives the same bytes as before it existed. The
messy profile adds, each from its own random stream:

Population (who lives where; ground truth households are unchanged, only addresses move):
- flats: a share of households move into flats of shared buildings, several households at
  "Flat N, 12 Oak Road" (one UPRN per flat, one postcode per building);
- group quarters: care homes (older people who lived alone), hostels (single young adults)
  and refuges (single-parent families): many unrelated households at one address, each
  still its own household in ground truth.
Records (each flagged `cor_<kind>` in ground truth, on the subject's record):
- heavier base corruption (typos, nicknames, day/month swaps, postcode typos, missing
  fields: `MESSY_RATES`), scaled by each agency's quality factor as in the default;
- a missing given name, placeholder names ("Baby" for infants, "Occupant"/"Resident"/...),
  a household member's NHS number or phone copied onto the record (a child's record
  carrying its resident parent's), extra missing NHS numbers, and the flat written the way
  systems write it in address line 1 ("3/12 Oak Road", "Flat 3 12 Oak Road").

Rates are per record before the agency quality factor, chosen from what partnerships
report of their extracts (table in docs/contracts.md, "Profiles").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthetic_data.corruption import CorruptionRates
from synthetic_data.population import Population

PROFILES = ("default", "messy")

# Base corruption of the messy profile: about twice the default, and day/month swaps three
# times (US-style entry and swapped columns in migrated systems).
MESSY_RATES = CorruptionRates(
    typo=0.04,
    transposition=0.015,
    nickname=0.10,
    name_swap=0.01,
    stale_surname=0.25,
    case_noise=0.06,
    whitespace_noise=0.05,
    dob_day_month_swap=0.03,
    dob_default=0.01,
    missing=0.05,
    stale_address=0.2,
    postcode_typo=0.03,
)

PLACEHOLDER_ADULT = ("Occupant", "Resident", "Tenant", "Unknown")
PLACEHOLDER_INFANT = "Baby"
PLACEHOLDER_RELATED = {"mother": "Mum", "father": "Dad"}
GQ_NAMES = {
    "care_home": (
        "Rosewood Care Home",
        "Ashfield Nursing Home",
        "Meadowbank Residential Home",
        "Holly Lodge Care Home",
    ),
    "hostel": ("Station Road Hostel", "St Anne's Hostel", "Foyer Young People's Hostel"),
    "refuge": ("Haven House", "Safe Harbour Refuge", "Willow House"),
}


@dataclass(frozen=True)
class MessyRates:
    """Messy-only error rates (per record unless said otherwise)."""

    flat_households: float = 0.15  # households moved into flats of shared buildings
    care_home_persons: float = 0.006  # share of the population living in care homes
    hostel_persons: float = 0.002  # ... in hostels
    refuge_persons: float = 0.002  # ... in refuges (whole single-parent families)
    missing_given_name: float = 0.015  # given name left blank
    placeholder_adult: float = 0.006  # "Occupant", "Resident"... instead of a given name
    placeholder_infant: float = 0.3  # "Baby" for children under 3 months
    placeholder_related: float = 0.03  # "Mum"/"Dad" typed as a related person's name
    copied_nhs: float = 0.02  # child's record carries a resident parent's NHS number
    copied_phone: float = 0.05  # child's record carries a resident parent's phone
    missing_nhs: float = 0.05  # NHS number not recorded (on top of `missing`)
    flat_styles: float = 0.5  # flat written "3/12 Oak Road" or "Flat 3 12 Oak Road"


# --------------------------------------------------------------------------- population


def _new_addresses(addrs: pd.DataFrame, base_rows: np.ndarray, line1: list[str]) -> pd.DataFrame:
    """Address rows copying street/postcode of `base_rows` with new line 1, ids and UPRNs."""
    start_id = int(addrs["address_id"].max()) + 1
    start_uprn = int(addrs["uprn"].max()) + 1
    new = addrs.iloc[base_rows].copy()
    new["address_id"] = np.arange(start_id, start_id + len(new), dtype=np.int64)
    new["uprn"] = np.arange(start_uprn, start_uprn + len(new), dtype=np.int64)
    new["address_line_1"] = np.array(line1, dtype=object)
    return new


_FLAT = re.compile(r"^flat (\d+), ", re.IGNORECASE)


def _move(pop: Population, households: np.ndarray, address_ids: np.ndarray) -> None:
    """Households' current address (and the open address-history row) becomes address_ids."""
    hh = pop.households
    hh.loc[households, "address_id"] = address_ids
    hist = pop.address_history
    cur = hist["date_to"].isna().to_numpy()
    where = pd.Series(address_ids, index=households)
    rows = cur & hist["household_id"].isin(households).to_numpy()
    hist.loc[rows, "address_id"] = where.loc[hist.loc[rows, "household_id"]].to_numpy()


def apply_population(pop: Population, rng: np.random.Generator, rates: MessyRates) -> Population:
    """Flats in shared buildings and group quarters; returns the changed population (the
    addresses table gains an `address_kind` column: house, flat, care_home, hostel, refuge)."""
    hh = pop.households
    persons = pop.persons
    addrs = pop.addresses.assign(address_kind="house")
    n_people = len(persons)
    used = set(hh["address_id"]) | set(pop.address_history["address_id"])
    spare = np.array(sorted(set(addrs["address_id"]) - used), dtype=np.int64)
    rng.shuffle(spare)
    spare_pos = 0

    def take_spare() -> int:
        nonlocal spare_pos
        if spare_pos < len(spare):
            spare_pos += 1
            return int(spare[spare_pos - 1])
        return int(rng.integers(0, len(addrs)))

    first = persons.drop_duplicates("household_id").set_index("household_id")
    size = hh["size"].to_numpy()
    htype = hh["household_type"].to_numpy()
    lead_age = first["age"].reindex(hh["household_id"]).to_numpy()
    taken = np.zeros(len(hh), bool)

    # Group quarters first: each facility gets a spare address with the home's name in line 1.
    def facilities(kind: str, eligible: np.ndarray, target: float, lo: int, hi: int) -> None:
        nonlocal addrs
        cand = np.flatnonzero(eligible & ~taken)
        rng.shuffle(cand)
        want = max(lo, int(round(target * n_people)))
        chosen, total = [], 0
        for h in cand:
            if total >= want:
                break
            chosen.append(h)
            total += int(size[h])
        if total < lo:
            return  # too few eligible people for even one facility
        chosen_arr = np.array(chosen)
        taken[chosen_arr] = True
        names = GQ_NAMES[kind]
        k = 0
        while k < len(chosen_arr):
            n_res, j = int(rng.integers(lo, hi + 1)), k + 1
            while j < len(chosen_arr) and size[chosen_arr[k:j]].sum() < n_res:
                j += 1
            if size[chosen_arr[j:]].sum() < lo:  # no leftover too small to be a facility
                j = len(chosen_arr)
            group = chosen_arr[k:j]
            base = take_spare()
            line1 = (
                names[int(rng.integers(0, len(names)))]
                + ", "
                + _FLAT.sub("", str(addrs.at[base, "address_line_1"]))
            )
            new = _new_addresses(addrs, np.array([base]), [line1]).assign(address_kind=kind)
            addrs = pd.concat([addrs, new], ignore_index=True)
            _move(pop, group, np.repeat(new["address_id"].to_numpy(), len(group)))
            k = j

    # Sizes: most English care homes have 10-60 beds, hostels 10-50, refuges 5-15 families.
    facilities("care_home", (htype == "single") & (lead_age >= 70), rates.care_home_persons, 10, 40)
    facilities(
        "hostel",
        (htype == "single") & (lead_age >= 18) & (lead_age < 40),
        rates.hostel_persons,
        10,
        30,
    )
    facilities("refuge", htype == "single_parent", rates.refuge_persons, 10, 20)

    # Flats: households grouped into buildings of 3-8 flats at one street address.
    cand = np.flatnonzero(~taken & (rng.random(len(hh)) < rates.flat_households))
    rng.shuffle(cand)
    k = 0
    while k + 2 < len(cand):
        n_flats = int(rng.integers(3, 9))
        group = cand[k : k + n_flats]
        base = int(hh.at[int(group[0]), "address_id"])
        street = _FLAT.sub("", str(addrs.at[base, "address_line_1"]))
        line1 = [f"Flat {i + 1}, {street}" for i in range(len(group))]
        new = _new_addresses(addrs, np.repeat(base, len(group)), line1).assign(address_kind="flat")
        _move(pop, group, new["address_id"].to_numpy())
        addrs = pd.concat([addrs, new], ignore_index=True)
        k += n_flats
    addrs = addrs.reset_index(drop=True)
    pop.addresses = addrs
    return pop


# --------------------------------------------------------------------------- records


def _parent_at_home(c, pid: np.ndarray) -> np.ndarray:
    """A resident parent of each person (mother first), -1 if none."""
    m = c.p["mother_id"].to_numpy()[pid]
    f = c.p["father_id"].to_numpy()[pid]
    return np.where(c.same_household(m, pid), m, np.where(c.same_household(f, pid), f, -1))


_FLAT_FULL = re.compile(r"^(\s*)flat (\d+), (\d+\S*) (.*)$", re.IGNORECASE)


def _flat_style(s: object, style: int) -> object:
    if not isinstance(s, str):
        return s
    m = _FLAT_FULL.match(s)
    if not m:
        return s
    pad, flat, number, street = m.groups()
    if style == 0:
        return f"{pad}{flat}/{number} {street}"
    return f"{pad}{s[len(pad) : len(pad) + 4]} {flat} {number} {street}"


def apply_records(
    c,
    pid: np.ndarray,
    dirty: pd.DataFrame,
    flags: pd.DataFrame,
    rng: np.random.Generator,
    rates: MessyRates,
    slot: str,
    relationship: pd.Series | None = None,
) -> None:
    """Messy record errors on one agency's (dirty) values of one person slot, in place.
    Flags are added to `flags` for the subject slot only."""
    n = len(dirty)
    ok = pid >= 0
    pid0 = np.where(ok, pid, 0)
    age = c.age[pid0]
    has = dirty.columns.__contains__
    new: dict[str, np.ndarray] = {}

    def draw(rate: float, eligible: np.ndarray) -> np.ndarray:
        return (rng.random(n) < rate) & eligible & ok

    if has("given_name"):
        g = dirty["given_name"].to_numpy(dtype=object)
        present = pd.notna(g)
        if slot == "subject":
            infant = draw(rates.placeholder_infant, present & (age < 0.25))
            adult = draw(rates.placeholder_adult, present & (age >= 18) & ~infant)
            pick = rng.integers(0, len(PLACEHOLDER_ADULT), n)
            g = np.where(infant, PLACEHOLDER_INFANT, g)
            g = np.where(adult, np.array(PLACEHOLDER_ADULT, dtype=object)[pick], g)
            missing = draw(rates.missing_given_name, present & ~infant & ~adult)
            g = np.where(missing, None, g)
            new["cor_placeholder_name"] = infant | adult
            new["cor_missing_given_name"] = missing
        elif relationship is not None:
            rel = relationship.to_numpy(dtype=object)
            word = np.array(
                [PLACEHOLDER_RELATED.get(r, "") if isinstance(r, str) else "" for r in rel],
                dtype=object,
            )
            m = draw(rates.placeholder_related, present & (word != ""))
            g = np.where(m, word, g)
        dirty["given_name"] = g
    if slot == "subject":
        parent = _parent_at_home(c, pid0)
        child = (age < 18) & (parent >= 0)
        par = np.maximum(parent, 0)
        if has("nhs_number"):
            pn = c.p["nhs_number"].to_numpy()[par]
            m = draw(rates.copied_nhs, child & (pn >= 0))
            v = dirty["nhs_number"].to_numpy(dtype=object)
            v = np.where(m, pd.Series(pn).astype(str).to_numpy(dtype=object), v)
            gone = draw(rates.missing_nhs, pd.notna(v) & ~m)
            dirty["nhs_number"] = np.where(gone, None, v)
            new["cor_copied_nhs"] = m
            flags["cor_missing_nhs_number"] = (
                flags.get("cor_missing_nhs_number", pd.Series(False, index=flags.index)).to_numpy(
                    dtype=bool
                )
                | gone
            )
        if has("phone"):
            pm = c.p["mobile"].to_numpy(dtype=object)[par]
            own = dirty["phone"].to_numpy(dtype=object)
            m = draw(rates.copied_phone, child & pd.notna(pm) & (pm != own))
            dirty["phone"] = np.where(m, pm, own)
            new["cor_copied_phone"] = m
    if has("address_line_1"):
        a = dirty["address_line_1"].to_numpy(dtype=object)
        is_flat = np.fromiter(
            (isinstance(x, str) and _FLAT_FULL.match(x) is not None for x in a), bool, n
        )
        m = draw(rates.flat_styles, is_flat)
        style = rng.integers(0, 2, n)
        dirty["address_line_1"] = [
            _flat_style(x, s) if hit else x for x, s, hit in zip(a, style, m, strict=True)
        ]
        if slot == "subject":
            new["cor_flat_style"] = m
    if slot == "subject":
        for k, v in new.items():
            flags[k] = v
