"""Toy pseudonymised population for the linkage tests (tests only).

Produces the identifiers.parquet shape of docs/contracts.md (tok_*, bf_*, blk_*) from clean
and corrupted toy identities, with ground truth and the plaintext alongside for the
privacy-cost baseline. Tokens are stdlib HMAC-SHA256 truncated to 128 bits and Bloom filters
a simple keyed bigram encoding: a stand-in until the bridge encoder is in the tree.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import dataclass
from datetime import date, timedelta

import jellyfish
import pandas as pd

KEY = b"toy-linkage-key-for-tests-only-0"
BLOOM_BITS = 512
BLOOM_K = 8

GIVEN = {
    "F": [
        "olivia",
        "amelia",
        "isla",
        "ava",
        "mia",
        "ivy",
        "lily",
        "isabella",
        "rosie",
        "sophia",
        "grace",
        "freya",
        "willow",
        "evie",
        "poppy",
        "elizabeth",
        "katherine",
        "margaret",
        "jessica",
        "charlotte",
        "hannah",
        "chloe",
        "emily",
        "zara",
        "aisha",
        "maryam",
        "fatima",
        "amira",
        "layla",
        "ruby",
        "daisy",
        "phoebe",
        "harriet",
    ],
    "M": [
        "oliver",
        "george",
        "noah",
        "arthur",
        "leo",
        "muhammad",
        "harry",
        "oscar",
        "archie",
        "henry",
        "jack",
        "charlie",
        "freddie",
        "theodore",
        "thomas",
        "william",
        "james",
        "alexander",
        "daniel",
        "joseph",
        "samuel",
        "benjamin",
        "edward",
        "jacob",
        "ibrahim",
        "yusuf",
        "adam",
        "ethan",
        "lucas",
        "mason",
        "logan",
        "reuben",
    ],
}
NICK = {
    "elizabeth": "liz",
    "katherine": "kate",
    "margaret": "maggie",
    "jessica": "jess",
    "charlotte": "lottie",
    "william": "bill",
    "james": "jim",
    "alexander": "alex",
    "daniel": "dan",
    "joseph": "joe",
    "samuel": "sam",
    "benjamin": "ben",
    "edward": "ted",
    "thomas": "tom",
    "theodore": "theo",
    "harriet": "hattie",
    "isabella": "bella",
    "jacob": "jake",
    "henry": "harry",
}
CANON = {v: k for k, v in NICK.items()}
FAMILY = [
    "smith",
    "jones",
    "williams",
    "taylor",
    "brown",
    "davies",
    "evans",
    "wilson",
    "thomas",
    "johnson",
    "roberts",
    "robinson",
    "thompson",
    "wright",
    "walker",
    "white",
    "edwards",
    "hughes",
    "green",
    "hall",
    "lewis",
    "harris",
    "clarke",
    "patel",
    "jackson",
    "wood",
    "turner",
    "martin",
    "cooper",
    "hill",
    "ward",
    "morris",
    "moore",
    "clark",
    "lee",
    "king",
    "baker",
    "harrison",
    "morgan",
    "allen",
    "james",
    "scott",
    "phillips",
    "watson",
    "davis",
    "parker",
    "price",
    "bennett",
    "young",
    "griffiths",
    "mitchell",
    "kelly",
    "cook",
    "carter",
    "richardson",
    "bailey",
    "collins",
    "bell",
    "shaw",
    "murphy",
    "miller",
    "cox",
    "richards",
    "khan",
    "marshall",
    "anderson",
    "simpson",
    "ellis",
    "adams",
    "singh",
    "begum",
    "wilkinson",
    "foster",
    "chapman",
    "powell",
    "webb",
    "rogers",
    "gray",
    "mason",
    "ali",
    "hunt",
    "hussain",
    "campbell",
    "matthews",
    "owen",
    "palmer",
    "holmes",
    "mills",
    "barnes",
    "knight",
    "lloyd",
    "butler",
    "russell",
    "barker",
    "fisher",
    "stevens",
    "jenkins",
]
STREETS = [
    "high street",
    "station road",
    "church lane",
    "park avenue",
    "victoria road",
    "green lane",
    "manor road",
    "church street",
    "kings road",
    "queens road",
    "mill lane",
    "new road",
    "school lane",
    "the crescent",
    "grange road",
]
DISTRICTS = ["LS1", "LS2", "LS6", "LS7", "LS8", "LS9", "LS11", "LS12", "BD1", "BD3"]


def _key(field: str) -> bytes:
    return hmac.new(KEY, field.encode(), hashlib.sha256).digest()


def tok(field: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    return hmac.new(_key(field), value.encode(), hashlib.sha256).hexdigest()[:32]


def bloom(field: str, value: str | None, salt: str = "") -> bytes | None:
    if not value:
        return None
    bits = bytearray(BLOOM_BITS // 8)
    padded = f"_{value}_"
    key = _key("bloom:" + field)
    for gram in {padded[i : i + 2] for i in range(len(padded) - 1)}:
        for k in range(BLOOM_K):
            msg = f"{salt}|{k}:{gram}".encode()
            h = int.from_bytes(hmac.new(key, msg, hashlib.sha256).digest()[:4])
            pos = h % BLOOM_BITS
            bits[pos // 8] |= 1 << (7 - pos % 8)
    return bytes(bits)


def _typo(rng: random.Random, s: str) -> str:
    if len(s) < 3:
        return s
    i = rng.randrange(1, len(s) - 1)
    op = rng.choice(("sub", "swap", "del"))
    if op == "sub":
        return s[:i] + rng.choice("aeiounrst") + s[i + 1 :]
    if op == "swap":
        return s[: i - 1] + s[i] + s[i - 1] + s[i + 1 :]
    return s[:i] + s[i + 1 :]


def _nhs(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            return "".join(map(str, digits)) + str(check)


@dataclass
class Person:
    person_id: str
    household_id: str
    given: str
    family: str
    dob: date
    sex: str
    district: str
    sector: str
    postcode: str
    address: str
    uprn: str
    nhs: str


def make_people(n_households: int, rng: random.Random) -> list[Person]:
    people: list[Person] = []
    for h in range(n_households):
        family = rng.choice(FAMILY)
        district = rng.choice(DISTRICTS)
        sector = f"{district} {rng.randrange(1, 9)}"
        postcode = f"{sector}{rng.choice('ABDEFGHJ')}{rng.choice('LNPQRSTUW')}"
        address = f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"
        uprn = str(rng.randrange(10**9, 10**10))
        n_adults = rng.choice((1, 2, 2))
        n_children = rng.choice((1, 2, 2, 3))
        members: list[tuple[date, str]] = []
        for _ in range(n_adults):
            members.append(
                (date(1975, 1, 1) + timedelta(days=rng.randrange(0, 7300)), rng.choice("FM"))
            )
        twin = rng.random() < 0.03  # ~1.5% of maternities are multiple
        for c in range(n_children):
            if twin and c == 1:
                members.append((members[-1][0], rng.choice("FM")))
            else:
                members.append(
                    (date(2008, 1, 1) + timedelta(days=rng.randrange(0, 5800)), rng.choice("FM"))
                )
        used: set[str] = set()
        for dob, sex in members:
            given = rng.choice([g for g in GIVEN[sex] if g not in used])
            used.add(given)
            people.append(
                Person(
                    f"T{len(people):05d}",
                    f"H{h:04d}",
                    given,
                    family,
                    dob,
                    sex,
                    district,
                    sector,
                    postcode,
                    address,
                    uprn,
                    _nhs(rng),
                )
            )
    return people


AGENCIES = ("GP", "SCH", "SC", "POL")


def _corrupt(rng: random.Random, p: Person, agency: str) -> dict:
    given, family, other = p.given, p.family, None
    dob = p.dob
    postcode, address, uprn = p.postcode, p.address, p.uprn
    nhs: str | None = p.nhs if agency in ("GP", "SC") else None
    r = rng.random()
    if r < 0.06 and given in NICK:
        given = NICK[given]
    elif r < 0.14:
        given = _typo(rng, given)
    r = rng.random()
    if r < 0.06:
        family = _typo(rng, family)
    elif r < 0.09:
        other, family = family, rng.choice(FAMILY)
    r = rng.random()
    if r < 0.04 and dob.day <= 12 and dob.day != dob.month:
        dob = date(dob.year, dob.day, dob.month)
    elif r < 0.07:
        # 29 February keeps a valid day in the neighbouring year
        day = min(dob.day, 28) if dob.month == 2 else dob.day
        dob = dob.replace(year=dob.year + rng.choice((-1, 1)), day=day)
    elif r < 0.10:
        dob = dob.replace(day=min(28, max(1, dob.day + rng.choice((-1, 1)))))
    r = rng.random()
    if r < 0.08:
        district = rng.choice(DISTRICTS)
        postcode = f"{district} {rng.randrange(1, 9)}AB"
        address = f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"
        uprn = str(rng.randrange(10**9, 10**10))
    elif r < 0.16:
        postcode, uprn = None, None
    elif r < 0.22:
        address = _typo(rng, address)
    if nhs is not None and rng.random() < 0.1:
        nhs = None
    return {
        "given_name": given,
        "family_name": family,
        "other_names": other,
        "date_of_birth": dob,
        "sex": p.sex if rng.random() > 0.02 else None,
        "postcode": postcode,
        "address": address,
        "uprn": uprn,
        "nhs_number": nhs,
    }


def _canonical(g: str) -> str:
    return CANON.get(g, g)


def encode(plain: dict) -> dict:
    """Tokens, Bloom filters and blocking keys for one plaintext record."""
    g, f, o = plain["given_name"], plain["family_name"], plain["other_names"]
    dob: date | None = plain["date_of_birth"]
    pc: str | None = plain["postcode"]
    dob_s = dob.isoformat() if dob else None
    swapped = None
    if dob is not None and dob.day <= 12:
        swapped = date(dob.year, dob.day, dob.month).isoformat()
    fam_ph = jellyfish.soundex(f) if f else None
    giv_ph = jellyfish.soundex(g) if g else None
    sector = pc[:-2] if pc else None
    district = pc.split(" ")[0] if pc else None
    # Spec v3 salting (schemas/encoding_spec.yaml, ig_bridge.encoding): exact names with the
    # full DOB (the surname + the canonical forename's initial); forename variants with the
    # surname's sound + birth year; name filters with birth year + month; the address
    # filter with postcode + birth year. No salt, no token (and no filter).
    year = str(dob.year) if dob else None
    ym = f"{dob.year}-{dob.month:02d}" if dob else None

    def salted(field: str, v: str | None, *salts: str | None) -> str | None:
        if not v or not all(salts):
            return None
        return tok(field, "|".join([v, *(str(x) for x in salts)]))

    def salted_bloom(field: str, v: str | None, salt: str | None) -> bytes | None:
        return bloom(field, v, salt) if v and salt else None

    canon = _canonical(g) if g else None
    return {
        "tok_given_name": salted("given_name", g, dob_s),
        "tok_given_name_canonical": salted("given_name", canon, fam_ph, year),
        "tok_given_name_phonetic": salted("given_name_phonetic", giv_ph, fam_ph, year),
        "tok_family_name": salted("family_name", f, dob_s, canon[0] if canon else "-"),
        "tok_other_names": salted("family_name", o, dob_s, canon[0] if canon else "-"),
        "tok_dob": tok("dob", dob_s),
        "tok_dob_swapped": tok("dob", swapped),
        "tok_address": tok("address", f"{plain['address']}|{pc}" if pc else None),
        "tok_uprn": tok("uprn", plain["uprn"]),
        "tok_nhs_number": tok("nhs_number", plain["nhs_number"]),
        "tok_upn": None,
        "tok_phone": None,
        "tok_email": None,
        "bf_given_name": salted_bloom("given_name", g, ym),
        "bf_family_name": salted_bloom("family_name", f, ym),
        "bf_address": salted_bloom(
            "address", plain["address"], f"{pc}|{year}" if pc and year else None
        ),
        "blk_dob_family": tok("blk_dob_family", f"{dob_s}|{fam_ph}" if dob and f else None),
        "blk_dob_postcode_sector": tok(
            "blk_dob_postcode_sector", f"{dob_s}|{sector}" if dob and sector else None
        ),
        "blk_dob_postcode_district": tok(
            "blk_dob_postcode_district", f"{dob_s}|{district}" if dob and district else None
        ),
        # The spec's keys for what the salts above cost (a DOB or sex error, a name variant).
        "blk_given_phonetic_dob": salted("blk_given_phonetic_dob", giv_ph, dob_s),
        "blk_canonical_given_dob": salted("blk_canonical_given_dob", canon, dob_s),
        "blk_names_unordered_dob": salted(
            "blk_names_unordered_dob", "|".join(sorted((giv_ph, fam_ph))), dob_s
        )
        if giv_ph and fam_ph
        else None,
    }


@dataclass
class ToyData:
    identifiers: pd.DataFrame  # contract shape
    truth: pd.DataFrame  # record_ref, agency, person_id, household_id
    plaintext: pd.DataFrame  # record_ref, agency, plaintext identifiers (baseline only)
    people: list[Person]


def make_toy(
    n_households: int = 300,
    seed: int = 7,
    batch: str = "b1",
    people: list[Person] | None = None,
    ref_prefix: str = "",
) -> ToyData:
    """Records for each person in 1-3 agencies; a few duplicate records within SC."""
    rng = random.Random(seed)
    if people is None:
        people = make_people(n_households, rng)
    ids, truth, plain_rows = [], [], []
    for p in people:
        agencies = rng.sample(AGENCIES, rng.choice((1, 2, 2, 3, 3)))
        if "SC" in agencies and rng.random() < 0.05:
            agencies.append("SC")
        for agency in agencies:
            ref = f"{ref_prefix}{agency}-{len(ids):06d}"
            plain = _corrupt(rng, p, agency)
            ids.append(
                {
                    "record_ref": ref,
                    "agency": agency,
                    "batch_id": f"{agency}-{batch}",
                    **encode(plain),
                }
            )
            truth.append(
                {
                    "record_ref": ref,
                    "agency": agency,
                    "person_id": p.person_id,
                    "household_id": p.household_id,
                }
            )
            plain_rows.append({"record_ref": ref, "agency": agency, **plain})
    return ToyData(pd.DataFrame(ids), pd.DataFrame(truth), pd.DataFrame(plain_rows), people)


def test_toy_shape_matches_identifiers_contract() -> None:
    toy = make_toy(n_households=20)
    df = toy.identifiers
    assert {"record_ref", "agency", "batch_id"} <= set(df.columns)
    toks = df.filter(like="tok_").stack().dropna()
    assert toks.str.fullmatch(r"[0-9a-f]{32}").all()
    lengths = {len(b) for b in df["bf_given_name"].dropna()}
    assert lengths == {BLOOM_BITS // 8}
    assert df["record_ref"].is_unique
    assert len(toy.truth) == len(df)


def test_swapped_dob_token_matches_other_record() -> None:
    a = encode(
        {
            "given_name": "amy",
            "family_name": "lee",
            "other_names": None,
            "date_of_birth": date(2010, 3, 7),
            "sex": "F",
            "postcode": None,
            "address": "1 x",
            "uprn": None,
            "nhs_number": None,
        }
    )
    b = encode(
        {
            "given_name": "amy",
            "family_name": "lee",
            "other_names": None,
            "date_of_birth": date(2010, 7, 3),
            "sex": "F",
            "postcode": None,
            "address": "1 x",
            "uprn": None,
            "nhs_number": None,
        }
    )
    assert a["tok_dob_swapped"] == b["tok_dob"]
    assert a["tok_dob"] != b["tok_dob"]


#: Toy columns salted like a spec column of the same name (the others are toy-only keys).
SALTED_AS_SPEC = (
    "tok_given_name",
    "tok_given_name_canonical",
    "tok_given_name_phonetic",
    "tok_family_name",
    "bf_given_name",
    "bf_family_name",
    "bf_address",
    "blk_canonical_given_dob",
)


def _agreement(a: object, b: object) -> str:
    if a is None or b is None or pd.isna(a) or pd.isna(b):
        return "missing"
    return "equal" if a == b else "differ"


def test_toy_salts_follow_the_bridge_encoder() -> None:
    """Same names, one salt source changed at a time: each toy column agrees, differs or is
    missing exactly where the bridge's encoder (the spec in force) does, so the linkage tests
    see the current spec's salting, not an older one's."""
    from ig_bridge.encoding import Encoder
    from ig_bridge.keys import generate_link_key
    from ig_bridge.normalise import normalise_identifiers

    base = {
        "given_name": "katherine",
        "family_name": "smith",
        "other_names": None,
        "date_of_birth": date(2011, 3, 14),
        "sex": "F",
        "postcode": "LS6 3AL",
        "address": "12 high street",
        "uprn": None,
        "nhs_number": None,
    }
    variants = {
        "same": {},
        "day": {"date_of_birth": date(2011, 3, 15)},
        "month": {"date_of_birth": date(2011, 4, 14)},
        "year": {"date_of_birth": date(2012, 3, 14)},
        "no dob": {"date_of_birth": None},
        "no sex": {"sex": None},
        "postcode": {"postcode": "LS6 3AN"},
        "no postcode": {"postcode": None},
        "nickname": {"given_name": "kate"},
    }
    rows = [base] + [{**base, **v} for v in variants.values()]
    raw = pd.DataFrame(
        {
            "given_name": [r["given_name"] for r in rows],
            "family_name": [r["family_name"] for r in rows],
            "date_of_birth": [r["date_of_birth"] and r["date_of_birth"].isoformat() for r in rows],
            "sex": [r["sex"] for r in rows],
            "postcode": [r["postcode"] for r in rows],
            "address_line_1": [r["address"] for r in rows],
        }
    ).astype(object)
    real = Encoder(generate_link_key()).encode(normalise_identifiers(raw, ["%Y-%m-%d"]).frame)
    toy = pd.DataFrame([encode(r) for r in rows])
    seen = set()
    for i, name in enumerate(variants, start=1):
        for col in SALTED_AS_SPEC:
            want = _agreement(real.at[0, col], real.at[i, col])
            assert _agreement(toy.at[0, col], toy.at[i, col]) == want, (name, col, want)
            seen.add(want)
    assert seen == {"equal", "differ", "missing"}  # the variants exercise every outcome
