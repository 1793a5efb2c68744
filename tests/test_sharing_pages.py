"""The workspace's decision-log pages through the real app (TestClient over HTTPS): a forged
form (bad CSRF token) records nothing, a justification with an identifier is refused and not
echoed, someone without an allocation is refused, and only the IG lead sees challenges."""

from __future__ import annotations

from test_workspace_app import audit_bodies, client, csrf, setup, sign_in, world  # noqa: F401
from workspace_world import PASSWORD, Setup

GOOD = {
    "channel": "phone_call",
    "occurred_on-day": "28",
    "occurred_on-month": "5",
    "occurred_on-year": "2026",
    "asked": "no",
    "categories": "case_notes",
    "basis": "consent",
    "justification": "the parent agreed that the school should know",
}


def _form(s: Setup, **over: str) -> dict[str, str]:
    other = "SCH" if s.agency != "SCH" else "CSC"
    return {**GOOD, "person_id": s.person, "from_agency": s.agency, "to_agency": other, **over}


def _recorded(s: Setup) -> list[dict]:
    return [b for b in audit_bodies(s, "sharing") if b["type"] == "sharing_off_system"]


def test_forged_form_records_nothing(setup: Setup) -> None:  # noqa: F811
    c = sign_in(client(setup))
    r = c.post("/sharing/off-system", data={**_form(setup), "csrf_token": "forged"})
    assert r.status_code == 403 and "Form expired" in r.text
    assert _recorded(setup) == []
    page = c.get("/sharing/off-system")
    r = c.post("/sharing/off-system", data={**_form(setup), "csrf_token": csrf(page.text)})
    assert r.status_code == 200 and "recorded" in r.text
    assert len(_recorded(setup)) == 1


def test_identifier_refused_not_echoed_and_allocation_required(setup: Setup) -> None:  # noqa: F811
    c = sign_in(client(setup))
    token = csrf(c.get("/sharing/off-system").text)
    text = "Dr Alan Turing rang on 07700 900123 to ask for the notes"
    r = c.post(
        "/sharing/off-system", data={**_form(setup, justification=text), "csrf_token": token}
    )
    assert r.status_code == 403 and "Your text was not kept" in r.text
    assert "Turing" not in r.text and "07700" not in r.text
    assert "Turing" not in "".join(str(b) for b in audit_bodies(setup))
    # pc9 (police) has no allocation: the same refusal for a real and a made-up person
    p = sign_in(client(setup), "pc9")
    token = csrf(p.get("/sharing/off-system").text)
    answers = []
    for person in (setup.person, "P-MADE-UP"):
        r = p.post(
            "/sharing/off-system",
            data={**_form(setup, person_id=person, from_agency="POL"), "csrf_token": token},
        )
        answers.append((r.status_code, "not allocated" in r.text))
    assert answers == [(403, True), (403, True)]
    assert _recorded(setup) == []


def test_only_the_ig_lead_sees_and_decides_challenges(setup: Setup) -> None:  # noqa: F811
    setup.ws.accounts.create("ig1", PASSWORD, "ig_lead", None)
    c = sign_in(client(setup))
    token = csrf(c.get("/sharing/not-shared").text)
    r = c.post(
        "/sharing/not-shared",
        data={
            "kind": "not_offered",
            "person_id": setup.person,
            "agency": "POL",
            "categories": "case_notes",
            "reason": "not_proportionate",
            "justification": "the concern is historic and police need not know",
            "csrf_token": token,
        },
    )
    assert r.status_code == 200, r.text
    seq = [b for b in audit_bodies(setup, "sharing") if b["type"] == "sharing_not_offered"]
    assert len(seq) == 1
    target = next(
        r.seq
        for r in setup.ws.gov.audit.entries()
        if r.kind == "sharing" and r.data()["type"] == "sharing_not_offered"
    )
    token = csrf(c.get("/sharing/challenge").text)
    r = c.post(
        "/sharing/challenge",
        data={
            "target_seq": str(target),
            "to": "ig_lead",
            "grounds": "on reflection the police should have been offered this",
            "csrf_token": token,
        },
    )
    assert r.status_code == 200, r.text
    [ch] = [b for b in audit_bodies(setup, "sharing") if b["type"] == "sharing_challenge"]
    assert "open-challenges" not in c.get("/sharing").text
    assert c.get(f"/sharing/challenges/{ch['record_id']}").status_code == 404
    ig = sign_in(client(setup), "ig1")
    assert ch["record_id"] in ig.get("/sharing").text
    page = ig.get(f"/sharing/challenges/{ch['record_id']}")
    assert page.status_code == 200 and "on reflection the police" in page.text
    r = ig.post(
        f"/sharing/challenges/{ch['record_id']}",
        data={
            "outcome": "upheld",
            "decided_as": "ig_lead",
            "reasons": "not offering was proportionate at the time",
            "csrf_token": csrf(page.text),
        },
    )
    assert r.status_code == 200 and "recorded" in r.text
    r = ig.post(
        f"/sharing/challenges/{ch['record_id']}",
        data={
            "outcome": "overturned",
            "decided_as": "ig_lead",
            "reasons": "changing my mind after deciding once",
            "csrf_token": csrf(page.text),
        },
    )
    assert r.status_code == 409
