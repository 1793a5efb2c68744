"""The governance API's access surface, attacked through the real FastAPI app over the real
linked warehouse and governance store: existence/consent oracles in 403s, failed and expired
authentication, caching of personal data, and input echoed back in 422 bodies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from test_api import NOW, Hub, World, build_world, make_hub

from governance.api import create_app
from governance.api_tokens import TokenStore
from governance.audit import make_engine
from governance.consent import ConsentStatus
from governance.relationships import Relationship, SubjectKind

EH = "early_help_family_support"


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


@pytest.fixture
def hub(world: World, tmp_path: Path) -> Hub:
    from fastapi.testclient import TestClient

    gov, views, store, tokens, db_path = make_hub(world, tmp_path, deployed=False)  # counts from 1
    return Hub(TestClient(create_app(views, store)), gov.audit, gov, tokens, db_path)


def _with_consent(hub: Hub, world: World, status: ConsentStatus) -> str:
    """A real person whose early_help consent at EH stands at `status` on NOW (from the
    agencies' own consent records in the warehouse)."""
    for pid, purpose in sorted(world.consent._events):
        if (
            purpose == "early_help"
            and hub.gov.consent.state(pid, "early_help", "EH", NOW).status is status
        ):
            return pid
    pytest.skip(f"no person with early_help consent {status.value} in this world")


def _entries(hub: Hub) -> list[dict]:
    return [r.data() for r in hub.audit.entries()]


# --- no oracle in refusals ---------------------------------------------------------------------


def test_unallocated_probe_cannot_tell_refused_withdrawn_or_missing(hub: Hub, world: World) -> None:
    refused = _with_consent(hub, world, ConsentStatus.REFUSED)
    withdrawn = _with_consent(hub, world, ConsentStatus.WITHDRAWN)
    probes = {
        "refused": f"/persons/{refused}?protocol={EH}",
        "withdrawn": f"/persons/{withdrawn}?protocol={EH}",
        "made_up": f"/persons/P-{'9' * 12}?protocol={EH}",
    }
    answers = {k: hub.get(url, who="sw2") for k, url in probes.items()}
    first = answers["refused"]
    assert first.status_code == 403
    for r in answers.values():
        assert r.status_code == first.status_code
        assert r.content == first.content  # byte for byte
        assert dict(r.headers) == dict(first.headers)
    assert first.json() == {
        "detail": "refused under the protocol",
        "reasons": ["no_legitimate_relationship"],
    }
    # the decisions themselves did differ, and are recorded for the IG lead
    recorded = [sorted({r for f in e["fields"] for r in f["reasons"]}) for e in _entries(hub)]
    assert "consent_refused" in recorded[0] and "consent_withdrawn" in recorded[1]
    assert "consent_refused" not in recorded[2] and "consent_withdrawn" not in recorded[2]
    # an allocated practitioner is told why (that is their business): the filter is only
    # for a user without a relationship
    hub.gov.relationships.add(Relationship("sw2", SubjectKind.PERSON, refused, dt.date(2026, 1, 1)))
    r = hub.get(probes["refused"], who="sw2")
    assert r.status_code == 403 and "consent_refused" in r.json()["reasons"]
    assert "audit_seq" in r.json()


def test_unallocated_probe_of_households_and_identity_is_uniform(hub: Hub, world: World) -> None:
    a = hub.get(f"/households/{world.household}?protocol={EH}", who="sw2")
    b = hub.get(f"/households/H-{'8' * 12}?protocol={EH}", who="sw2")
    assert a.status_code == b.status_code == 403
    assert a.content == b.content and dict(a.headers) == dict(b.headers)


# --- authentication ----------------------------------------------------------------------------


def test_failed_authentication_is_audited_without_the_token(hub: Hub, world: World) -> None:
    url = f"/persons/{world.person}?protocol=s47_child_protection_enquiry"
    bogus = "not-a-real-token-but-long-enough-to-matter-1234567890"
    store = TokenStore(hub.audit.engine)
    revoked = store.issue("sw9", "practitioner")
    store.revoke(revoked)
    assert hub.client.get(url).status_code == 401
    assert hub.client.get(url, headers={"Authorization": f"Bearer {bogus}"}).status_code == 401
    assert hub.client.get(url, headers={"Authorization": f"Bearer {revoked}"}).status_code == 401
    entries = _entries(hub)
    assert [e["reason"] for e in entries] == ["missing_token", "unknown_token", "revoked_token"]
    for e in entries:
        assert e["type"] == "auth_failure" and e["route"] == "/persons/{person_id}"
        assert e["method"] == "GET" and e["at"]
    assert entries[0]["token_sha256_prefix"] is None
    assert entries[1]["token_sha256_prefix"] == hashlib.sha256(bogus.encode()).hexdigest()[:12]
    raw = hub.db_path.read_bytes()
    for tok in (bogus, revoked, hashlib.sha256(bogus.encode()).hexdigest()):
        assert tok.encode() not in raw
    # the person id in the URL is not logged either (the route template is)
    assert world.person not in json.dumps(entries)


def test_expired_token_is_refused_and_audited(hub: Hub, world: World) -> None:
    store = TokenStore(hub.audit.engine)
    short = store.issue("sw1", "practitioner", "CSC", ttl=dt.timedelta(seconds=1))
    url = f"/persons/{world.person}?protocol=s47_child_protection_enquiry"
    assert hub.client.get(url, headers={"Authorization": f"Bearer {short}"}).status_code == 200
    time.sleep(1.2)
    r = hub.client.get(url, headers={"Authorization": f"Bearer {short}"})
    assert r.status_code == 401
    assert _entries(hub)[-1]["reason"] == "expired_token"
    # every issued token carries an expiry
    with hub.audit.engine.connect() as conn:
        rows = conn.execute(text("SELECT created_at, expires_at FROM gov_api_tokens")).all()
    assert rows and all(exp is not None and exp > made for made, exp in rows)


def test_tokens_from_before_expiry_existed_expire_after_the_default(tmp_path: Path) -> None:
    """A store created by the earlier code (no expires_at column): the column is added and an
    old token (created two days ago) is refused."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    old = "an-old-token-that-never-expired"
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE gov_api_tokens (token_sha256 VARCHAR(64) PRIMARY KEY, "
                "user_id VARCHAR(128) NOT NULL, role VARCHAR(32) NOT NULL, "
                "agency VARCHAR(8), created_at VARCHAR(40) NOT NULL, "
                "revoked_at VARCHAR(40))"
            )
        )
        conn.execute(
            text("INSERT INTO gov_api_tokens VALUES (:h, 'sw1', 'practitioner', 'CSC', :c, NULL)"),
            {
                "h": hashlib.sha256(old.encode()).hexdigest(),
                "c": (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).isoformat(),
            },
        )
    store = TokenStore(engine)
    assert store.check(old) == (None, "expired_token")
    fresh = store.issue("sw1", "practitioner")
    assert store.authenticate(fresh) is not None


def test_token_expiry_column_is_added_on_postgresql_too() -> None:
    """The production store: a schema-qualified gov_api_tokens from before expiry existed."""
    from governance.testing import postgres_url, temp_schema

    url, why = postgres_url()
    if url is None:
        pytest.skip(why)
    with temp_schema(url) as schema:
        engine = make_engine(url, schema)
        with engine.begin() as conn:
            conn.execute(
                text(
                    f'CREATE TABLE "{schema}".gov_api_tokens (token_sha256 '
                    "VARCHAR(64) PRIMARY KEY, user_id VARCHAR(128) NOT NULL, role "
                    "VARCHAR(32) NOT NULL, agency VARCHAR(8), created_at VARCHAR(40) "
                    "NOT NULL, revoked_at VARCHAR(40))"
                )
            )
        store = TokenStore(engine)
        token = store.issue("sw1", "practitioner", ttl=dt.timedelta(minutes=5))
        assert store.check(token)[1] == "ok"
        TokenStore(engine)  # a second start finds the column and leaves it
        engine.dispose()


def test_authentication_flood_is_counted_not_logged_line_by_line(hub: Hub, world: World) -> None:
    clock = {"t": 0.0}
    failures = hub.client.app.state.auth_failures
    failures.clock = lambda: clock["t"]
    failures._window_start = 0.0
    url = f"/persons/{world.person}?protocol=s47_child_protection_enquiry"
    for i in range(200):
        r = hub.client.get(url, headers={"Authorization": f"Bearer guess-{i:06d}"})
        assert r.status_code == 401
    assert hub.audit.count() == failures.per_minute
    clock["t"] = 61.0  # the next minute: the suppressed count is written once
    hub.client.get(url, headers={"Authorization": "Bearer one-more"})
    entries = _entries(hub)
    summary = [e for e in entries if e["type"] == "auth_failures_suppressed"]
    assert [s["count"] for s in summary] == [200 - failures.per_minute]
    assert len(entries) == failures.per_minute + 2


# --- caching and echo --------------------------------------------------------------------------


def test_every_response_is_no_store(hub: Hub, world: World) -> None:
    s47 = "s47_child_protection_enquiry"
    calls = [
        hub.get(f"/persons/{world.person}?protocol={s47}"),  # 200
        hub.get(f"/households/{world.household}?protocol={s47}"),  # 200
        hub.get(f"/households/{world.household}/involvement"),  # 200
        hub.get(f"/persons/{world.person}?protocol={s47}", who="sw2"),  # 403
        hub.get(f"/persons/P-DOES-NOT-EXIST?protocol={s47}", who="sw3"),  # 404
        hub.get(f"/persons/{world.person}?protocol=Bad-Protocol"),  # 422
        hub.get(f"/persons/{world.person}?protocol={s47}", who=None),  # 401
        hub.client.post(
            f"/persons/{world.person}/identity",
            json={},
            headers={"Authorization": f"Bearer {hub.tokens['sw1']}"},
        ),  # 422
        hub.client.get("/health"),
        hub.client.get("/openapi.json"),
    ]
    assert {r.status_code for r in calls} >= {200, 401, 403, 404, 422}
    for r in calls:
        assert r.headers["cache-control"] == "no-store", r.request.url
        assert r.headers["pragma"] == "no-cache", r.request.url


def test_422_names_the_field_never_the_value(hub: Hub, world: World) -> None:
    name, address, dob = "Jayden Okonkwo-Smith", "14 Larkspur Crescent, Leeds LS6 2QT", "03/07/2015"
    justification = (f"Please show everything about {name}, born {dob}, living at {address}. " * 6)[
        :600
    ]
    assert len(justification) > 500
    r = hub.client.post(
        f"/persons/{world.person}/break-glass",
        json={
            "protocol_id": "mash_information_sharing",
            "category": "risk_of_significant_harm",
            "justification": justification,
            "hours": 8,
        },
        headers={"Authorization": f"Bearer {hub.tokens['sw1']}"},
    )
    assert r.status_code == 422
    body = r.json()
    assert {
        "field": "body.justification",
        "problem": "string_too_long: String should have at most 500 characters",
    } in body["errors"]
    for needle in (name, "Okonkwo", "Larkspur", "LS6", dob, justification[:40]):
        assert needle not in r.text
    # a bad query value and a bad JSON document: named, not echoed
    r = hub.get(f"/persons/{world.person}?protocol=Jayden_Okonkwo_Smith")
    assert r.status_code == 422 and "Jayden" not in r.text and "Okonkwo" not in r.text
    assert r.json()["errors"][0]["field"] == "query.protocol"
    r = hub.client.post(
        f"/persons/{world.person}/break-glass",
        content=b'{"justification": "Jayden Okonkwo LS6 2QT",',
        headers={
            "Authorization": f"Bearer {hub.tokens['sw1']}",
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 422 and "Jayden" not in r.text and "LS6" not in r.text
    assert hub.audit.count() == 0  # bad input is not a decision


def test_unknown_protocol_answers_unknown_protocol(hub: Hub, world: World) -> None:
    r = hub.get(f"/persons/{world.person}?protocol=no_such_protocol")
    assert r.status_code == 403 and r.json()["reasons"] == ["unknown_protocol"]
    r = hub.get(f"/households/{world.household}?protocol=no_such_protocol")
    assert r.status_code == 403 and r.json()["reasons"] == ["unknown_protocol"]
