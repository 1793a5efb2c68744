"""Attack: a practitioner writes an identifier into a break-glass justification or an identity
request's reason, in a form the old screen let through (dotted NHS number, spaced lower-case
postcode, a date or a number in words, an e-mail with "at"/"dot", zero-width characters). The
audit log is append-only and kept forever, so the request must be refused and nothing of the
text may reach the audit store. Through the real API, on the real audit store (SQLite file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_api import World, build_world
from test_api_break_glass import Hub, _person_without_mash_consent
from test_identity import Setup, _bridge_entries
from test_identity import setup as setup  # noqa: PLC0414 - the identity fixture, reused

from governance.decisions import screen_justification
from governance.models import BreakGlassGrant

# (justification, fragments that must not be stored anywhere). Fragments are never pure hex:
# the store holds hex hashes and ids, where any short run of hex digits occurs by chance.
SECRETS = [
    ("Child with NHS 943.476.5919 disclosed injuries at school", ["943.476", "476.5919"]),
    ("Child with NHS 943/476/5919 disclosed injuries at school", ["943/476", "476/5919"]),
    ("Child at sw1a 1aa disclosed injuries, police on scene now", ["sw1a", "a 1aa"]),
    (
        "Child born fourth of March two thousand and twelve, injuries",
        ["fourth of march", "two thousand"],
    ),
    ("Child born on 4th March per school, injuries seen today", ["4th march"]),
    ("NHS number nine four three four seven six five nine one nine", ["nine four three"]),
    ("Mother is karen dot smith at example dot org, call her urgently", ["karen", "example"]),
    ("Mother is karen.smith(at)example(dot)org, call her urgently", ["karen", "example"]),
    ("Child with NHS 943\u200b476\u200b5919 disclosed injuries today", ["\u200b5919", "nhs 943"]),
    ("Child at 12 Acacia Avenue disclosed injuries, police on scene", ["acacia"]),
    ("Child of Mrs Quantock disclosed injuries at school this morning", ["quantock"]),
]
ORDINARY = [
    "Strategy discussion: child disclosed injuries at school this morning",
    "S47 enquiry opened after police report of domestic abuse overnight",
    "Police attended at 02:30 after a 999 call; two children in the home",
    "Urgent: mother admitted to hospital, 3 children may be alone at home",
    "Section 17 assessment due within 45 working days; GP concerns raised",
    "Contact from school about injuries; consent could not be sought without alerting the "
    "alleged abuser",
]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def _stored(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace").lower()


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_justifications_pass_the_screen(text: str) -> None:
    assert screen_justification(text)


@pytest.mark.parametrize(("secret", "fragments"), SECRETS, ids=[s[1][0] for s in SECRETS])
def test_break_glass_with_identifier_refused_and_never_stored(
    world: World, tmp_path: Path, secret: str, fragments: list[str]
) -> None:
    hub = Hub(world, tmp_path)
    person, _ = _person_without_mash_consent(hub, world)
    r = hub.post(f"/persons/{person}/break-glass", justification=secret)
    assert r.status_code == 403, r.text
    assert "justification_contains_identifier" in r.json()["reasons"]
    assert hub.rows(BreakGlassGrant) == []  # no override granted
    entry = hub.last()
    assert entry["break_glass"]["justification"].endswith("[withheld: looked like an identifier]")
    assert not entry["break_glass"]["used"] and not any(f["allowed"] for f in entry["fields"])
    log = "\n".join(str(hub.audit.get(i).data()) for i in range(1, hub.audit.count() + 1))
    stored = _stored(hub.db_path)
    assert [f for f in fragments if f in log.lower() or f in stored] == []
    assert secret.lower()[:25] not in stored


@pytest.mark.parametrize(("secret", "fragments"), SECRETS, ids=[s[1][0] for s in SECRETS])
def test_identity_reason_with_identifier_refused_unlogged(
    setup: Setup, secret: str, fragments: list[str]
) -> None:
    r = setup.ask(reason=secret)
    assert r.status_code == 422, r.text
    assert setup.gov.audit.count() == 0 and _bridge_entries(setup.bridge_log) == []
    assert not any(f in r.text.lower() for f in fragments)  # not echoed either
    db = setup.hub_dir / "governance.db"
    assert [f for f in fragments if f in _stored(db)] == []
