"""UK-format identifiers: NHS numbers, UPNs, UPRNs, postcodes, street addresses, phones, emails.

Everything is vectorised and driven by the caller's numpy Generator, so the same seed gives the
same identifiers. Formats are real (valid check digits, valid postcode shapes); values are random.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# One local authority area: Bradford-style BD districts (the streets and people are fictional).
POSTCODE_DISTRICTS = [
    "BD1",
    "BD2",
    "BD3",
    "BD4",
    "BD5",
    "BD6",
    "BD7",
    "BD8",
    "BD9",
    "BD10",
    "BD12",
    "BD13",
    "BD14",
    "BD15",
]
POST_TOWN = "BRADFORD"
LOCALITIES = [
    "Manningham",
    "Heaton",
    "Allerton",
    "Thornton",
    "Eccleshill",
    "Idle",
    "Wibsey",
    "Bowling",
    "Little Horton",
    "Girlington",
    "Undercliffe",
    "Wyke",
    "Clayton",
    "Queensbury",
    "Tong",
    "Laisterdyke",
]
# Inward-code letters never include C, I, K, M, O, V.
INWARD_LETTERS = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))
STREET_STEMS = [
    "Oak",
    "Ash",
    "Elm",
    "Beech",
    "Birch",
    "Cedar",
    "Hazel",
    "Holly",
    "Rowan",
    "Willow",
    "Church",
    "Mill",
    "Station",
    "Park",
    "Victoria",
    "Albert",
    "Queen",
    "King",
    "Princess",
    "Manor",
    "Grange",
    "Moor",
    "Valley",
    "Hill",
    "Bank",
    "Brook",
    "Well",
    "Spring",
    "Green",
    "Field",
    "Meadow",
    "Orchard",
    "Garden",
    "Castle",
    "Abbey",
    "Chapel",
    "School",
    "Market",
    "Bridge",
    "Canal",
    "Railway",
    "Wharf",
    "Cliffe",
    "Heath",
    "Common",
    "Lister",
    "Salt",
    "Titus",
    "Bronte",
    "Wordsworth",
    "Shakespeare",
    "Milton",
    "Byron",
    "Shelley",
    "Keats",
    "Nelson",
    "Wellington",
    "Gladstone",
    "Peel",
    "Cromwell",
    "Stanley",
    "Howard",
    "Percy",
    "Cavendish",
    "Russell",
    "Grosvenor",
    "Regent",
    "Carlton",
    "Belle Vue",
    "Fairfield",
    "Highfield",
    "Springfield",
    "Westfield",
    "Northfield",
    "Southfield",
    "Woodlands",
    "Hollins",
    "Thorn",
    "Fern",
    "Heather",
    "Laurel",
    "Lime",
    "Poplar",
    "Sycamore",
    "Chestnut",
]
STREET_SUFFIXES = [
    "Road",
    "Street",
    "Avenue",
    "Close",
    "Lane",
    "Grove",
    "Terrace",
    "Drive",
    "Crescent",
    "Way",
    "Place",
    "Gardens",
]
UPN_CHECK_LETTERS = np.array(list("ABCDEFGHJKLMNPQRTUVWXYZ"))
LA_CODE = "380"  # DfE LA number used in UPNs for this synthetic area
EMAIL_DOMAINS = np.array(["example.com", "example.org", "example.net"])  # RFC 2606 reserved


def _unique_ints(rng: np.random.Generator, low: int, span: int, size: int) -> np.ndarray:
    return low + rng.choice(span, size=size, replace=False).astype(np.int64)


def nhs_check_digit(body: np.ndarray) -> np.ndarray:
    """Mod-11 check digit for 9-digit NHS number bodies; 10 means the body is unusable."""
    digits = (body[:, None] // 10 ** np.arange(8, -1, -1)) % 10
    total = (digits * np.arange(10, 1, -1)).sum(axis=1)
    check = 11 - total % 11
    return np.where(check == 11, 0, check)


def nhs_numbers(rng: np.random.Generator, size: int) -> np.ndarray:
    """Unique valid 10-digit NHS numbers (int64) in the 4xx/6xx ranges England issues."""
    body = _unique_ints(rng, 400_000_000, 300_000_000, int(size * 1.8) + 64)
    body = body[(body < 500_000_000) | (body >= 600_000_000)]
    check = nhs_check_digit(body)
    ok = check != 10
    body, check = body[ok], check[ok]
    if len(body) < size:  # only for absurdly small draws
        return nhs_numbers(rng, size)
    return body[:size] * 10 + check[:size]


def nhs_is_valid(number: int) -> bool:
    body = np.array([number // 10])
    return int(nhs_check_digit(body)[0]) == number % 10


def upn_check_letter(body12: pd.Series) -> pd.Series:
    """DfE check letter over the 12 characters after it (weights 2..13, mod 23)."""
    digits = np.stack([body12.str[i].astype(int).to_numpy() for i in range(12)], axis=1)
    total = (digits * np.arange(2, 14)).sum(axis=1)
    return pd.Series(UPN_CHECK_LETTERS[total % 23], index=body12.index)


def upns(school_estab: np.ndarray, entry_year: np.ndarray) -> np.ndarray:
    """UPN = check letter + LA + establishment + 2-digit year + serial within (school, year)."""
    frame = pd.DataFrame({"s": school_estab, "y": entry_year % 100})
    serial = frame.groupby(["s", "y"]).cumcount().to_numpy() + 1
    body = (
        LA_CODE
        + pd.Series(school_estab).astype(str).str.zfill(4)
        + pd.Series(entry_year % 100).astype(str).str.zfill(2)
        + pd.Series(serial % 1000).astype(str).str.zfill(3)
    )
    return (upn_check_letter(body) + body).to_numpy(dtype=object)


def upn_is_valid(upn: str) -> bool:
    body = pd.Series([upn[1:]])
    return len(upn) == 13 and upn[1:].isdigit() and upn_check_letter(body).iloc[0] == upn[0]


def addresses(rng: np.random.Generator, size: int) -> pd.DataFrame:
    """A pool of `size` distinct residential addresses with UPRN and a valid-format postcode."""
    per_street = rng.integers(12, 90, size=size // 12 + 2)
    ends = np.cumsum(per_street)
    n_streets = int(np.searchsorted(ends, size) + 1)
    per_street = per_street[:n_streets]
    street = np.repeat(np.arange(n_streets), per_street)[:size]
    number = (np.arange(size) - np.concatenate([[0], np.cumsum(per_street)[:-1]])[street]) + 1
    stem = rng.integers(0, len(STREET_STEMS), n_streets)
    suffix = rng.integers(0, len(STREET_SUFFIXES), n_streets)
    locality = rng.integers(0, len(LOCALITIES), n_streets)
    sector = rng.integers(0, len(POSTCODE_DISTRICTS) * 10, n_streets)
    street_name = (
        pd.Series(np.array(STREET_STEMS, dtype=object)[stem])
        + " "
        + pd.Series(np.array(STREET_SUFFIXES, dtype=object)[suffix])
    )
    # A postcode unit covers ~15 neighbouring doors; units are numbered within their sector.
    unit_key = street.astype(np.int64) * 1000 + (number - 1) // 15
    sec = sector[street]
    frame = pd.DataFrame({"sec": sec, "unit": unit_key})
    units = frame.drop_duplicates("unit")
    rank_by_unit = pd.Series(units.groupby("sec").cumcount().to_numpy(), index=units["unit"])
    unit_rank = frame["unit"].map(rank_by_unit).to_numpy() % 400
    # outward code = district; inward = sector digit + two unit letters
    inward = (
        pd.Series(sec % 10).astype(str)
        + INWARD_LETTERS[unit_rank // 20]
        + INWARD_LETTERS[unit_rank % 20]
    )
    district = np.array(POSTCODE_DISTRICTS, dtype=object)[sec // 10]
    postcode = pd.Series(district) + " " + inward
    flat = rng.random(size) < 0.15
    flat_no = rng.integers(1, 9, size)
    line1 = pd.Series(number).astype(str) + " " + street_name.iloc[street].reset_index(drop=True)
    line1 = line1.where(~flat, "Flat " + pd.Series(flat_no).astype(str) + ", " + line1)
    return pd.DataFrame(
        {
            "address_id": np.arange(size, dtype=np.int64),
            "uprn": _unique_ints(rng, 100_050_000_000, 900_000_000, size),
            "address_line_1": line1.to_numpy(dtype=object),
            "address_line_2": np.array(LOCALITIES, dtype=object)[locality[street]],
            "town": POST_TOWN.title(),
            "postcode": postcode.to_numpy(dtype=object),
        }
    )


def mobile_numbers(rng: np.random.Generator, size: int) -> np.ndarray:
    a = rng.integers(7100, 7999, size)
    b = rng.integers(0, 1_000_000, size)
    return ("0" + pd.Series(a).astype(str) + " " + pd.Series(b).astype(str).str.zfill(6)).to_numpy(
        dtype=object
    )


def landline_numbers(rng: np.random.Generator, size: int) -> np.ndarray:
    b = rng.integers(200_000, 999_999, size)
    return ("01274 " + pd.Series(b).astype(str)).to_numpy(dtype=object)


def emails(rng: np.random.Generator, given: np.ndarray, family: np.ndarray) -> np.ndarray:
    from synthetic_data.names import to_codec

    g = pd.Series([to_codec(x, "ascii") for x in given]).str.lower()
    f = pd.Series([to_codec(x, "ascii") for x in family]).str.lower()
    f = f.str.replace(r"[^a-z]", "", regex=True)
    g = g.str.replace(r"[^a-z]", "", regex=True)
    n = pd.Series(rng.integers(1, 99, len(g))).astype(str)
    style = rng.integers(0, 3, len(g))
    local = np.where(style == 0, g + "." + f, np.where(style == 1, g + f + n, g.str[0] + f + n))
    return (pd.Series(local) + "@" + EMAIL_DOMAINS[rng.integers(0, 3, len(g))]).to_numpy(
        dtype=object
    )
