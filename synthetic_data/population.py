"""The true population: households, people, family relations and address history.

Built household-first and fully vectorised: per-household member counts become person rows with
np.repeat, and every attribute is drawn per role. Nothing here is corrupted; corruption happens
when agencies "record" these people (synthetic_data.corruption).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthetic_data import identifiers as ids
from synthetic_data.names import FEMALE, MALE, SURNAMES, zipf_weights

REF_DATE = np.datetime64("2025-03-31")  # the "extract date": fixed so output never depends on today
DAYS_PER_YEAR = 365.25

# (type, share of households). Shares follow the ONS household-composition mix closely enough to
# give a mean size near 2.4 (checked in tests).
HOUSEHOLD_TYPES = [
    ("single", 0.28),
    ("couple", 0.27),
    ("couple_children", 0.20),
    ("single_parent", 0.10),
    ("blended", 0.04),
    ("multigen", 0.05),
    ("house_share", 0.06),
]
TYPE_NAMES = np.array([t for t, _ in HOUSEHOLD_TYPES], dtype=object)

ROLE_A1, ROLE_A2, ROLE_PREV_CHILD, ROLE_CHILD, ROLE_GRAND, ROLE_SHARER = range(6)
ROLE_NAMES = np.array(
    ["adult1", "adult2", "child_prev", "child", "grandparent", "sharer"], dtype=object
)

# Need tier drives agency involvement: (P(tier 2), P(tier 1)) by household type.
NEED_TIERS = {
    "single": (0.01, 0.05),
    "couple": (0.005, 0.04),
    "couple_children": (0.04, 0.14),
    "single_parent": (0.12, 0.26),
    "blended": (0.12, 0.26),
    "multigen": (0.05, 0.15),
    "house_share": (0.02, 0.08),
}


@dataclass
class Population:
    persons: pd.DataFrame
    households: pd.DataFrame
    addresses: pd.DataFrame
    address_history: pd.DataFrame
    ref_date: np.datetime64


def _within(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row -> (owner index, index within owner) for `counts[i]` rows owned by i."""
    owner = np.repeat(np.arange(len(counts)), counts)
    start = np.cumsum(counts) - counts
    return owner, np.arange(len(owner)) - start[owner]


def _pick(rng: np.random.Generator, choices: list[int], p: list[float], n: int) -> np.ndarray:
    return rng.choice(np.array(choices), size=n, p=np.array(p))


def _household_counts(rng: np.random.Generator, people: int) -> pd.DataFrame:
    n_hh = int(people / 2.3) + 16
    probs = np.array([p for _, p in HOUSEHOLD_TYPES])
    htype = rng.choice(len(HOUSEHOLD_TYPES), size=n_hh, p=probs / probs.sum())
    name = TYPE_NAMES[htype]
    is_ = {t: name == t for t, _ in HOUSEHOLD_TYPES}
    a1 = (~is_["house_share"]).astype(np.int64)
    a2 = (is_["couple"] | is_["couple_children"] | is_["blended"] | is_["multigen"]).astype(
        np.int64
    )
    kids = np.zeros(n_hh, np.int64)
    kids[is_["couple_children"]] = _pick(
        rng, [1, 2, 3, 4], [0.40, 0.40, 0.15, 0.05], int(is_["couple_children"].sum())
    )
    kids[is_["single_parent"]] = _pick(
        rng, [1, 2, 3], [0.5, 0.35, 0.15], int(is_["single_parent"].sum())
    )
    kids[is_["multigen"]] = _pick(rng, [1, 2, 3], [0.4, 0.4, 0.2], int(is_["multigen"].sum()))
    kids[is_["blended"]] = _pick(rng, [0, 1, 2], [0.35, 0.45, 0.2], int(is_["blended"].sum()))
    prev = np.zeros(n_hh, np.int64)
    prev[is_["blended"]] = _pick(rng, [1, 2], [0.6, 0.4], int(is_["blended"].sum()))
    grand = np.zeros(n_hh, np.int64)
    grand[is_["multigen"]] = _pick(rng, [1, 2], [0.55, 0.45], int(is_["multigen"].sum()))
    share = np.zeros(n_hh, np.int64)
    share[is_["house_share"]] = _pick(
        rng, [2, 3, 4, 5], [0.35, 0.35, 0.2, 0.1], int(is_["house_share"].sum())
    )
    hh = pd.DataFrame(
        {
            "htype": name,
            "a1": a1,
            "a2": a2,
            "prev": prev,
            "kids": kids,
            "grand": grand,
            "share": share,
        }
    )
    hh["size"] = hh[["a1", "a2", "prev", "kids", "grand", "share"]].sum(axis=1)
    # Stop at the household that reaches `people`; it may lose its last (youngest) members.
    last = int(np.searchsorted(np.cumsum(hh["size"].to_numpy()), people))
    return hh.iloc[: last + 1].reset_index(drop=True)


def build_population(rng: np.random.Generator, people: int) -> Population:
    if people < 10:
        raise ValueError(f"people must be at least 10, got {people}")
    hh = _household_counts(rng, people)
    n_hh = len(hh)

    parts = []
    for role, col in [
        (ROLE_A1, "a1"),
        (ROLE_A2, "a2"),
        (ROLE_PREV_CHILD, "prev"),
        (ROLE_CHILD, "kids"),
        (ROLE_GRAND, "grand"),
        (ROLE_SHARER, "share"),
    ]:
        owner, k = _within(hh[col].to_numpy())
        if role == ROLE_CHILD:  # joint children are younger than a blended family's own
            k = k + hh["prev"].to_numpy()[owner]
        parts.append(pd.DataFrame({"household_id": owner, "role": role, "k": k}))
    p = pd.concat(parts, ignore_index=True).sort_values(
        ["household_id", "role", "k"], kind="stable"
    )
    p = p.iloc[:people].reset_index(drop=True)
    n = len(p)
    hid = p["household_id"].to_numpy()
    role = p["role"].to_numpy()
    htype = hh["htype"].to_numpy()[hid]
    is_child = (role == ROLE_PREV_CHILD) | (role == ROLE_CHILD)
    family = np.isin(htype, ["couple_children", "single_parent", "blended", "multigen"])

    # --- ages (years at REF_DATE) -------------------------------------------------------
    eldest = rng.uniform(0, 18, n_hh)
    mother_at_first = np.clip(rng.normal(29, 5.5, n_hh), 17, 45)
    age = np.zeros(n)
    a1 = role == ROLE_A1
    age[a1 & family] = (eldest + mother_at_first)[hid[a1 & family]]
    single_age = np.select(
        [rng.random(n) < 0.35, rng.random(n) < 0.55],
        [rng.uniform(18, 35, n), rng.uniform(35, 65, n)],
        rng.uniform(65, 93, n),
    )
    age[a1 & (htype == "single")] = single_age[a1 & (htype == "single")]
    couple_age = np.where(rng.random(n) < 0.4, rng.uniform(21, 38, n), rng.uniform(45, 90, n))
    age[a1 & (htype == "couple")] = couple_age[a1 & (htype == "couple")]
    sharer = role == ROLE_SHARER
    age[sharer] = rng.uniform(19, 40, int(sharer.sum()))
    a1_age_hh = np.zeros(n_hh)
    a1_age_hh[hid[a1]] = age[a1]
    a2 = role == ROLE_A2
    age[a2] = np.maximum(18.5, a1_age_hh[hid[a2]] + rng.normal(2, 3, int(a2.sum())))
    g = role == ROLE_GRAND
    age[g] = a1_age_hh[hid[g]] + rng.uniform(22, 34, int(g.sum())) + p["k"].to_numpy()[g] * 2
    gap = np.where(p["k"].to_numpy() == 0, 0.0, 1.0 + rng.gamma(2.0, 1.0, n))
    gap[~is_child] = 0.0
    child_age = eldest[hid] - pd.Series(gap).groupby(hid).cumsum().to_numpy()
    child_age = np.where(child_age < 0, rng.uniform(0.05, 0.9, n), child_age)
    age[is_child] = child_age[is_child]

    dob = (REF_DATE - np.round(age * DAYS_PER_YEAR).astype("timedelta64[D]")).astype(
        "datetime64[D]"
    )
    # Twins: the second child shares the first's date of birth.
    kk = p["k"].to_numpy()
    n_kids_hh = (hh["prev"] + hh["kids"]).to_numpy()
    twin_hh = (n_kids_hh >= 2) & (rng.random(n_hh) < 0.04)
    first_child = np.full(n_hh, -1, np.int64)
    first_child[hid[is_child & (kk == 0)]] = np.flatnonzero(is_child & (kk == 0))
    twin_rows = np.flatnonzero(is_child & (kk == 1) & twin_hh[hid] & (first_child[hid] >= 0))
    twin_of = np.full(n, -1, np.int64)
    twin_of[twin_rows] = first_child[hid[twin_rows]]
    dob[twin_rows] = dob[twin_of[twin_rows]]
    twin_of[first_child[hid[twin_rows]]] = twin_rows
    age = (REF_DATE - dob).astype(np.float64) / DAYS_PER_YEAR

    # --- sex ------------------------------------------------------------------------------
    female = rng.random(n) < 0.5
    female[a1 & family] = rng.random(int((a1 & family).sum())) < 0.94
    female[a1 & (htype == "single_parent")] = (
        rng.random(int((a1 & (htype == "single_parent")).sum())) < 0.88
    )
    a1_female_hh = np.zeros(n_hh, bool)
    a1_female_hh[hid[a1]] = female[a1]
    same_sex = rng.random(n) < 0.04
    female[a2] = np.where(same_sex[a2], a1_female_hh[hid[a2]], ~a1_female_hh[hid[a2]])
    female[g] = p["k"].to_numpy()[g] == 0

    # --- given names (Zipf) ---------------------------------------------------------------
    fw, mw = zipf_weights(len(FEMALE)), zipf_weights(len(MALE))
    fnames, mnames = np.array(FEMALE, dtype=object), np.array(MALE, dtype=object)
    fi, mi = rng.choice(len(FEMALE), n, p=fw), rng.choice(len(MALE), n, p=mw)
    # Twins get different names from each other.
    for idx_arr, size in ((fi, len(FEMALE)), (mi, len(MALE))):
        clash = twin_rows[idx_arr[twin_rows] == idx_arr[twin_of[twin_rows]]]
        idx_arr[clash] = (idx_arr[clash] + 1) % size
    given = np.where(female, fnames[fi], mnames[mi])
    mid_i = np.where(
        female, fnames[rng.choice(len(FEMALE), n, p=fw)], mnames[rng.choice(len(MALE), n, p=mw)]
    )
    middle = np.where((rng.random(n) < 0.4) & (mid_i != given), mid_i, None)

    # --- surnames ---------------------------------------------------------------------------
    sn = np.array(SURNAMES, dtype=object)
    sw = zipf_weights(len(SURNAMES), 0.9)
    birth = sn[rng.choice(len(SURNAMES), n, p=sw)]
    # A few adults carry their own double-barrelled or hyphenated surname.
    dbl = (rng.random(n) < 0.02) & ~is_child
    second = sn[rng.choice(len(SURNAMES), n, p=sw)]
    sep = np.where(rng.random(n) < 0.6, "-", " ")
    birth = np.where(dbl & (second != birth), birth + sep + second, birth)
    current = birth.copy()
    other = np.full(n, None, dtype=object)

    row_of = {r: np.full(n_hh, -1, np.int64) for r in (ROLE_A1, ROLE_A2)}
    row_of[ROLE_A1][hid[a1]] = np.flatnonzero(a1)
    row_of[ROLE_A2][hid[a2]] = np.flatnonzero(a2)
    a1r, a2r = row_of[ROLE_A1][hid], row_of[ROLE_A2][hid]
    married_hh = rng.random(n_hh) < 0.7
    takes = a1 & (a2r >= 0) & married_hh[hid] & female & ~female[np.maximum(a2r, 0)]
    current[takes] = birth[a2r[takes]]
    other[takes] = birth[takes]

    # --- non-resident parents: an adult of the right sex in another household ---------------
    needs = np.zeros(n_hh, bool)
    needs[hid[is_child & ((htype == "single_parent") | (role == ROLE_PREV_CHILD))]] = True
    need_hh = np.flatnonzero(needs)
    absent = np.full(n_hh, -1, np.int64)
    pool_ok = np.isin(htype, ["single", "couple", "house_share"]) & (age > 19) & (age < 70)
    for want_female in (False, True):
        sel = need_hh[a1_female_hh[need_hh] != want_female]
        pool = np.flatnonzero(pool_ok & (female == want_female))
        if len(sel) == 0 or len(pool) == 0:
            continue
        pool = pool[np.argsort(age[pool], kind="stable")]
        target = a1_age_hh[sel] + rng.normal(2, 4, len(sel))
        pos = np.searchsorted(age[pool], target) + rng.integers(-3, 4, len(sel))
        absent[sel] = pool[np.clip(pos, 0, len(pool) - 1)]

    # --- parents of each person ---------------------------------------------------------------
    mother = np.full(n, -1, np.int64)
    father = np.full(n, -1, np.int64)
    step = np.full(n, -1, np.int64)
    a1_is_f = female[np.maximum(a1r, 0)]
    joint = (role == ROLE_CHILD) & (htype != "single_parent")
    # joint children of a couple: A1 and A2 are the parents
    a2_is_m = (a2r >= 0) & ~female[np.maximum(a2r, 0)]
    mother[joint & a1_is_f] = a1r[joint & a1_is_f]
    father[joint & a2_is_m] = a2r[joint & a2_is_m]
    step[joint & ~a2_is_m & (a2r >= 0)] = a2r[joint & ~a2_is_m & (a2r >= 0)]  # co-parent
    # children with one resident parent (single parent or previous relationship)
    lone = ((role == ROLE_CHILD) & (htype == "single_parent")) | (role == ROLE_PREV_CHILD)
    nr = absent[hid]
    mother[lone & a1_is_f] = a1r[lone & a1_is_f]
    father[lone & a1_is_f] = nr[lone & a1_is_f]
    father[lone & ~a1_is_f] = a1r[lone & ~a1_is_f]
    mother[lone & ~a1_is_f] = nr[lone & ~a1_is_f]
    step[(role == ROLE_PREV_CHILD) & (a2r >= 0)] = a2r[(role == ROLE_PREV_CHILD) & (a2r >= 0)]
    # A1 of a multi-generational household is the grandparents' child.
    grow = {k: np.full(n_hh, -1, np.int64) for k in (0, 1)}
    for k in (0, 1):
        m = g & (kk == k)
        grow[k][hid[m]] = np.flatnonzero(m)
    mg = a1 & (htype == "multigen")
    mother[mg] = grow[0][hid[mg]]
    father[mg] = grow[1][hid[mg]]
    current[g] = birth[np.maximum(a1r[g], 0)]  # grandparents carry A1's birth surname
    other[g & (kk == 0)] = np.where(
        rng.random(int((g & (kk == 0)).sum())) < 0.5, birth[g & (kk == 0)], None
    )

    # Children's surnames: father's mostly, else mother's; some double-barrelled.
    fam_name = np.where(father >= 0, current[np.maximum(father, 0)], current[np.maximum(mother, 0)])
    use_mother = (rng.random(n) < np.where(lone, 0.5, 0.15)) & (mother >= 0)
    fam_name = np.where(use_mother, current[np.maximum(mother, 0)], fam_name)
    both = (mother >= 0) & (father >= 0)
    m_s, f_s = current[np.maximum(mother, 0)], current[np.maximum(father, 0)]
    barrel = (rng.random(n) < 0.06) & both & (m_s != f_s)
    fam_name = np.where(barrel, m_s + np.where(rng.random(n) < 0.7, "-", " ") + f_s, fam_name)
    current[is_child] = fam_name[is_child]
    birth[is_child] = fam_name[is_child]

    partner = np.full(n, -1, np.int64)
    has2 = a1 & (a2r >= 0)
    partner[has2] = a2r[has2]
    partner[a2r[has2]] = np.flatnonzero(has2)
    g0, g1 = grow[0], grow[1]
    both_g = (g0 >= 0) & (g1 >= 0)
    partner[g0[both_g]] = g1[both_g]
    partner[g1[both_g]] = g0[both_g]

    # --- contact details -------------------------------------------------------------------------
    adult = age >= 18
    nhs = ids.nhs_numbers(rng, n)
    nhs_known = rng.random(n) < 0.985
    mobile = ids.mobile_numbers(rng, n)
    has_mobile = np.where(adult, rng.random(n) < 0.92, (age >= 11) & (rng.random(n) < 0.6))
    email = ids.emails(rng, given, current)
    has_email = np.where(adult, rng.random(n) < 0.8, (age >= 13) & (rng.random(n) < 0.2))
    title = np.where(
        ~adult,
        None,
        np.where(
            female,
            np.where(other != None, "Mrs", np.where(rng.random(n) < 0.5, "Miss", "Ms")),  # noqa: E711
            "Mr",
        ),
    )
    title = np.where(adult & (rng.random(n) < 0.01), "Dr", title)

    # --- households: tier, address, history -------------------------------------------------------
    hh = hh.assign(size=np.bincount(hid, minlength=n_hh))
    tiers = np.array([NEED_TIERS[t] for t in hh["htype"]])
    u = rng.random(n_hh)
    tier = np.where(u < tiers[:, 0], 2, np.where(u < tiers.sum(axis=1), 1, 0))
    pool = ids.addresses(rng, int(n_hh * 1.5) + 32)
    order = rng.permutation(len(pool))
    cur_addr = order[:n_hh]
    moved = rng.random(n_hh) < np.where(tier > 0, 0.5, 0.3)
    moved2 = moved & (rng.random(n_hh) < 0.25)
    n1, n2 = int(moved.sum()), int(moved2.sum())
    prev_addr = np.full(n_hh, -1, np.int64)
    prev_addr[moved] = order[n_hh : n_hh + n1]
    prev2_addr = np.full(n_hh, -1, np.int64)
    prev2_addr[moved2] = order[n_hh + n1 : n_hh + n1 + n2]
    move_days = rng.integers(30, 6 * 365, n_hh)
    move_date = REF_DATE - move_days.astype("timedelta64[D]")
    move2_date = move_date - rng.integers(200, 4 * 365, n_hh).astype("timedelta64[D]")
    since = move2_date - rng.integers(365, 15 * 365, n_hh).astype("timedelta64[D]")
    h = np.arange(n_hh)
    hist = pd.concat(
        [
            pd.DataFrame(
                {
                    "household_id": h,
                    "address_id": cur_addr,
                    "date_from": np.where(moved, move_date, since),
                    "date_to": pd.NaT,
                }
            ),
            pd.DataFrame(
                {
                    "household_id": h[moved],
                    "address_id": prev_addr[moved],
                    "date_from": np.where(moved2, move2_date, since)[moved],
                    "date_to": move_date[moved],
                }
            ),
            pd.DataFrame(
                {
                    "household_id": h[moved2],
                    "address_id": prev2_addr[moved2],
                    "date_from": since[moved2],
                    "date_to": move2_date[moved2],
                }
            ),
        ],
        ignore_index=True,
    ).sort_values(["household_id", "date_from"], kind="stable")
    hist["date_from"] = hist["date_from"].astype("datetime64[s]")
    hist["date_to"] = pd.to_datetime(hist["date_to"]).astype("datetime64[s]")

    landline = np.where(rng.random(n_hh) < 0.25, ids.landline_numbers(rng, n_hh), None)
    households = pd.DataFrame(
        {
            "household_id": h,
            "household_type": hh["htype"].to_numpy(),
            "size": hh["size"],
            "need_tier": tier,
            "address_id": cur_addr,
            "previous_address_id": prev_addr,
            "moved_in": move_date.astype("datetime64[s]"),
            "landline": landline,
        }
    )
    persons = pd.DataFrame(
        {
            "person_id": np.arange(n, dtype=np.int64),
            "household_id": hid.astype(np.int64),
            "role": ROLE_NAMES[role],
            "sex": np.where(female, "F", "M"),
            "date_of_birth": dob.astype("datetime64[s]"),
            "age": np.round(age, 3),
            "title": title,
            "given_name": given,
            "middle_names": middle,
            "family_name": current,
            "birth_family_name": birth,
            "other_names": other,
            "nhs_number": np.where(nhs_known, nhs, -1).astype(np.int64),
            "mobile": np.where(has_mobile, mobile, None),
            "email": np.where(has_email, email, None),
            "mother_id": mother,
            "father_id": father,
            "step_parent_id": step,
            "partner_id": partner,
            "twin_id": twin_of,
        }
    )
    return Population(persons, households, pool, hist.reset_index(drop=True), REF_DATE)
