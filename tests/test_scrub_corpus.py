"""Free-text scrubbing against a corpus of written forms of identifiers (tests/data/
scrub_corpus.yaml): names, dates, NHS numbers, postcodes, addresses, phones, e-mails, UPN/NI
numbers and unicode tricks, each through the bridge's real scrubber for one record. Every form
must disappear; ordinary practitioner text must survive."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ig_bridge.scrub import Scrubber, record_values

CORPUS = yaml.safe_load(
    (Path(__file__).parent / "data" / "scrub_corpus.yaml").read_text(encoding="utf-8")
)
_SEP = re.compile(r"[\s.\-/()]")


def _scrubber() -> Scrubber:
    s = Scrubber()
    s.learn_names(CORPUS["other_rows_names"])
    return s


def leftovers(out: str, gone: list[str]) -> list[str]:
    """Values of `gone` still readable in the output (digits also with separators removed)."""
    low, squashed = out.lower(), _SEP.sub("", out).lower()
    return [
        g
        for g in gone
        if str(g).lower() in low or (re.fullmatch(r"\d{4,}", str(g)) and str(g) in squashed)
    ]


def test_corpus_is_broad() -> None:
    cases = CORPUS["cases"]
    assert len(cases) >= 100
    assert len({c["text"] for c in cases}) == len(cases)
    kinds = Counter(c["form"].split()[0] for c in cases)
    assert kinds["nhs"] >= 10 and len(kinds) >= 40


@pytest.mark.parametrize("case", CORPUS["cases"], ids=lambda c: c["form"])
def test_form_disappears(case: dict) -> None:
    out = _scrubber().scrub(case["text"], record_values(CORPUS["record"]))
    assert leftovers(out, case["gone"]) == [], out


@pytest.mark.parametrize("case", CORPUS["keep"], ids=lambda c: c["text"][:30])
def test_ordinary_text_kept(case: dict) -> None:
    out = _scrubber().scrub(case["text"], record_values(CORPUS["record"])).lower()
    assert [k for k in case["kept"] if k.lower() not in out] == [], out
