"""Property: under Early Help, whatever consents are given, refused, withdrawn or left to pass
their review date, a field is shown if and only if a current consent covers both its agency
and its category and nothing later refused or withdrawn it; no out-of-scope field is ever
returned. Checked by hypothesis against a plain model of the rules, on both stores."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governance.consent_scope import CATEGORIES_FILE
from governance.relationships import Relationship, Subject, SubjectKind
from tests.consent_world import EARLY_HELP, EH_WORKER, NOW, PROTOCOLS, ConsentWorld, make_world

PG_SCHEMA_PREFIX = "consent20_prop"
PARTNERS = sorted(PROTOCOLS[EARLY_HELP].agencies)
# Every payload field of every agency in the partnership's protocols: a consent must never
# reach beyond the protocol's own minimum dataset either.
ASKED = sorted(
    {
        (a, f)
        for p in PROTOCOLS.values()
        for a, fs in p.agencies.items()
        for f in fs
        if a in PARTNERS
    }
    | {(a, f) for a in PARTNERS for f in ("case_notes", "sen_status")}
)
# The model reads the categories itself: it must not share the code under test.
_DOC = yaml.safe_load(CATEGORIES_FILE.read_text("utf-8"))["categories"]
CATEGORY_OF = {f: c for c, body in _DOC.items() for f in body["fields"]}
CATS = sorted(_DOC)


def covers(scope: tuple[set[str], set[str]], agency: str, field: str) -> bool:
    agencies, cats = scope
    return agency in agencies and CATEGORY_OF[field] in cats


scopes = st.tuples(
    st.sets(st.sampled_from(PARTNERS), min_size=1, max_size=3),
    st.sets(st.sampled_from(CATS), min_size=1, max_size=4),
)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("give"), scopes, st.booleans()),  # (.., expired?)
        st.tuples(st.just("refuse"), scopes, st.just(False)),
        st.tuples(st.just("withdraw"), st.integers(0, 5), st.just(False)),
    ),
    min_size=1,
    max_size=6,
)

_counter = itertools.count()


@pytest.fixture
def w(tmp_path: Path, backend: tuple[str, str | None]) -> ConsentWorld:
    url, schema = backend
    return make_world(tmp_path, url, schema)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=actions)
def test_no_field_outside_a_standing_consent_is_ever_shown(w: ConsentWorld, plan) -> None:
    person = f"PX{next(_counter)}"  # a fresh person per example (no refs: keyed by id)
    w.gov.relationships.add(Relationship("eh1", SubjectKind.PERSON, person, dt.date(2026, 1, 1)))
    model: list[dict] = []  # what the rules say, kept independently of the store
    givens: list[str] = []
    for kind, arg, expired in plan:
        t = w.tick()
        if kind == "withdraw":
            if not givens:
                continue
            rid = givens[arg % len(givens)]
            rec = next(m for m in model if m["id"] == rid)
            if rec["withdrawn"] is not None:
                continue
            w.service.withdraw(EH_WORKER, rid, "phone")
            rec["withdrawn"] = t
            continue
        agencies, cats = arg
        given_on = NOW.date() - dt.timedelta(days=400 if expired else 10)
        review_by = given_on + dt.timedelta(days=200 if expired else 300)
        rec = w.service.record(
            EH_WORKER,
            w.consent(
                person=person,
                agencies=tuple(sorted(agencies)),
                categories=tuple(sorted(cats)),
                status="given" if kind == "give" else "refused",
                given_on=given_on,
                review_by=review_by,
            ),
        )
        model.append(
            {
                "id": rec.record_id,
                "kind": kind,
                "scope": (set(agencies), set(cats)),
                "at": t,
                "live": not expired,
                "withdrawn": None,
            }
        )
        if kind == "give":
            givens.append(rec.record_id)
    at = w.tick()
    d = w.gov.decide(EH_WORKER, EARLY_HELP, Subject(person), ASKED, at)
    dataset = {(a, f) for a, fs in PROTOCOLS[EARLY_HELP].agencies.items() for f in fs}

    def expected(agency: str, field: str) -> bool:
        if (agency, field) not in dataset:
            return False
        vetoes = [
            m["at"] for m in model if m["kind"] == "refuse" and covers(m["scope"], agency, field)
        ]
        vetoes += [
            m["withdrawn"]
            for m in model
            if m["withdrawn"] is not None and covers(m["scope"], agency, field)
        ]
        return any(
            m["kind"] == "give"
            and m["live"]
            and covers(m["scope"], agency, field)
            and not any(v >= m["at"] for v in vetoes)
            for m in model
        )

    for f in d.fields:
        assert f.allowed == expected(f.agency, f.field), (f, plan)
        if f.allowed:  # never outside a consent's scope, never outside the protocol
            assert any(covers(m["scope"], f.agency, f.field) for m in model)
            assert f.legal_basis == "consent"
