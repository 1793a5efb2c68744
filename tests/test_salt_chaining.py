"""Salt chaining (benchmarks/attacks/chaining.py): a curious hub merges the values of one name
under several salts through the records that carry them, and aligns the merged classes with
unsalted name counts. Performed end to end on the orchestrated run's 1,500 people, encoded
with real keys by the bridge's encoder: a surname + postcode key (spec v3 before its eighth
amendment) decodes surnames; the current spec, which holds no name without a DOB, does not."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from benchmarks.attacks import chaining
from benchmarks.attacks.data import population_plaintext, sample_reference
from benchmarks.attacks.suite import salt_chaining
from ig_bridge.encoding import Encoder, load_encoding_spec
from ig_bridge.keys import generate_link_key

#: The key the eighth amendment removed, and the surname-sound token it chained.
FAMILY_POSTCODE = {"sources": ["family_name", "postcode"], "compact": True}
SURNAME_SOUND = {
    "sources": ["family_name_phonetic", "dob_year", "sex"],
    "domain": "family_name_phonetic",
}


def _with_family_postcode_key() -> dict:
    spec = load_encoding_spec()
    spec["blocking"]["columns"]["blk_family_postcode"] = FAMILY_POSTCODE
    spec["tokens"]["columns"]["tok_family_name_phonetic"] = SURNAME_SOUND
    return spec


@pytest.fixture(scope="module")
def people(orchestrated_run: Path) -> pd.DataFrame:
    return population_plaintext(orchestrated_run)


def _hub(people: pd.DataFrame, spec: dict) -> SimpleNamespace:
    """What a hub holding one record per person under `spec` would hold, with the truth."""
    rec = Encoder(generate_link_key(), spec).encode(people.reset_index(drop=True))
    rec = rec.astype(object).where(rec.notna(), None)
    return SimpleNamespace(
        spec=spec,
        rec=rec,
        pop=people,
        person=people.index.to_numpy(),
        row_of=pd.Series(np.arange(len(people)), index=people.index),
    )


def _attack(hub: SimpleNamespace, col: str, how: str) -> float:
    partners = [p for p in chaining.chains(hub.spec)[col][how] if p in hub.rec]
    ref = sample_reference(hub.pop.index.to_numpy(), 1.0, 7)
    att = np.isin(hub.person, ref)
    return salt_chaining(hub, col, partners, how, ref, "100%", att).records


def test_chains_lists_keys_that_hold_a_name_without_a_birth_date() -> None:
    sets = chaining.chains(_with_family_postcode_key())
    assert "blk_family_postcode" in sets["tok_family_name_phonetic"]["name keys"]
    # record links: every column without a part of the DOB, whatever it holds
    assert {"tok_nhs_number", "tok_address"} <= set(sets["tok_family_name"]["record links"])
    current = chaining.chains(load_encoding_spec())
    assert all(
        not any(s.startswith("blk_") and "postcode" in s for s in sets_.get("name keys", []))
        for sets_ in current.values()
    )


def test_merged_classes_join_values_through_partners() -> None:
    rec = pd.DataFrame(
        {
            "tok_x": ["a", "b", "c", "a", None],
            "blk_k": ["k1", "k1", "k2", None, "k2"],
        },
        dtype=object,
    )
    got = chaining.merged_classes(rec, "tok_x", ["blk_k"], {"tok_x": "x", "blk_k": "k"})
    assert got[0] == got[1] == got[3]  # a ~ b through k1; the second a is the same value
    assert got[2] != got[0] and got[4] is None


def test_a_family_key_lets_the_hub_decode_surnames_and_its_removal_stops_it(
    people: pd.DataFrame,
) -> None:
    weak = _attack(
        _hub(people, _with_family_postcode_key()), "tok_family_name_phonetic", "name keys"
    )
    assert weak > 0.05, f"the attack found {weak:.2%}: it no longer chains a family's tokens"
    now = _hub(people, load_encoding_spec())
    for col, sets in chaining.chains(now.spec).items():
        for how in sets:
            got = _attack(now, col, how)
            assert got <= 0.01, f"{col} via {how}: {got:.2%} beyond chance"


def test_chaining_is_scored_beyond_what_needs_no_name_value(people: pd.DataFrame) -> None:
    """A figure counts only what the name's values add: beyond chance (classes of the same
    sizes, random members) and beyond the hub's record links alone (the joined records
    without the name column), whichever is larger."""
    hub = _hub(people, load_encoding_spec())
    col = "tok_family_name"
    partners = [p for p in chaining.chains(hub.spec)[col]["record links"] if p in hub.rec]
    ref = sample_reference(hub.pop.index.to_numpy(), 1.0, 7)
    r = salt_chaining(hub, col, partners, "record links", ref, "100%", np.isin(hub.person, ref))
    assert r.linked is not None and r.chance is not None and r.raw is not None
    assert r.records == pytest.approx(max(0.0, r.raw - max(r.chance, r.linked)))
    keys_only = salt_chaining(
        hub, "tok_given_name_canonical", [], "name keys", ref, "100%", np.isin(hub.person, ref)
    )
    assert keys_only.linked is None  # no record link: nothing but chance to discount
