"""The IG report's appropriateness section, from a real report run: the linked test world's
warehouse, real governed views and break-glass (governance.service), real records of what the
rules never see (governance.sharing), workspace accounts with teams, and build_report."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import duckdb
import pytest
from test_api import NOW, World, make_hub
from test_api import world as world  # noqa: F401 - the session's linked test world

from governance.decision_records import Interaction as EngineInteraction
from governance.decisions import User
from governance.relationships import Relationship, SubjectKind
from governance.reports.appropriateness import Interaction
from governance.reports.linkage_report import build_report, collect_report_data
from governance.service import BreakGlassAsk, Forbidden
from governance.sharing import SharingLog
from governance.sharing_model import About
from linkage.config import HubPaths
from workspace.accounts import AccountStore

EARLY_HELP, MASH = "early_help_family_support", "mash_information_sharing"
SW = User("sw1", "practitioner", "CSC")
HV = User("hv1", "practitioner", "HV")
IG = User("ig1", "ig_lead", None)
CG = User("cg1", "caldicott_guardian", None)
CSC_TEAM, HV_TEAM = "assessment team 1", "health visiting north"


def test_report_engine_interactions_are_the_engines() -> None:
    assert {i.value for i in Interaction} == {i.value for i in EngineInteraction}


@pytest.fixture(scope="module")
def run(world: World, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("appropriateness")
    gov, views, _store, _tokens, _db = make_hub(world, tmp, deployed=False)  # role-only MASH
    paths = HubPaths.for_run(tmp / "run")
    paths.hub.mkdir(parents=True, exist_ok=True)
    shutil.copy2(world.warehouse, paths.warehouse)  # a private copy: build_report writes beside
    accounts = AccountStore(gov.audit.engine)
    accounts.create("sw1", None, "practitioner", "CSC", team=CSC_TEAM)
    accounts.create("hv1", None, "practitioner", "HV", team=HV_TEAM)
    gov.relationships.add(
        Relationship("hv1", SubjectKind.PERSON, world.person, dt.date(2026, 1, 1))
    )

    def resolve(a: About) -> About | None:
        exists, household = views.person_household(str(a.person_id))
        return About(a.person_id, household) if exists else None

    log = SharingLog(gov, resolve=resolve, clock=lambda: NOW)
    # the rules: one Early Help view (consent withholds partner data), one MASH break-glass.
    # The view is of a member the school holds, so the rules have school data to refuse: each
    # session links its own world (fresh keys), and the member with most agencies need not be one.
    with duckdb.connect(str(world.warehouse), read_only=True) as con:
        row = con.execute(
            "SELECT person_id FROM record_person WHERE list_contains(?, person_id)"
            " GROUP BY 1 ORDER BY bool_or(agency = 'SCH') DESC, count(DISTINCT agency) DESC, 1"
            " LIMIT 1",
            [world.members],
        ).fetchone()
    subject = row[0] if row else world.person
    try:
        refused_seq = views.person_view(SW, EARLY_HELP, subject).audit_seq
    except Forbidden as exc:
        refused_seq = exc.audit_seq
    bg = views.household_view(
        SW,
        MASH,
        world.household,
        break_glass=BreakGlassAsk(
            "risk_of_significant_harm", "injury reported and consent cannot be sought safely", 2
        ),
    )
    assert bg.extra["break_glass"]["used"]
    # what the rules never see: CSC shared twice outside the system ...
    for channel in ("strategy_meeting", "phone_call"):
        log.off_system(
            SW,
            About(world.person),
            channel=channel,
            occurred_on=NOW.date(),
            from_agency="CSC",
            to_agency="POL",
            asked=True,
            categories=["case_notes"],
            basis="CA1989_s47",
            justification="section forty seven strategy discussion with police",
        )
    # ... health visiting twice decided not to offer, and one of those is overturned
    firsts = [
        log.not_offered(
            HV,
            About(world.person),
            "CSC",
            ["health_notes"],
            "not_necessary",
            "routine contacts only, nothing of concern",
        )
        for _ in range(2)
    ]
    ch = log.challenge(
        SW,
        firsts[0].audit_seq,
        "caldicott_guardian",
        "the missed contacts were relevant to the assessment",
    )
    log.decide(
        CG,
        ch.record_id,
        "overturned",
        "caldicott_guardian",
        "missed contacts should have been offered to social care",
    )
    # the rules' refusal of school data is challenged and upheld
    ch2 = log.challenge(SW, refused_seq, "ig_lead", "the family expected the school to share")
    log.decide(
        IG,
        ch2.record_id,
        "upheld",
        "ig_lead",
        "the consent recorded does not cover education information",
    )
    # an offer refused by health visiting
    offer = log.offer(
        SW,
        About(world.person),
        "HV",
        ["social_care_plan"],
        "consent",
        "the family asked that their health visitor knows",
    )
    log.respond(
        HV,
        offer.record_id,
        False,
        reason="already_known",
        justification="the plan was discussed at the last home visit",
    )
    html = build_report(paths, "r1", audit=gov.audit)
    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        data = collect_report_data(
            con,
            "r1",
            audit_entries=[r.data() for r in gov.audit.entries()],
            staff={"sw1": ("CSC", CSC_TEAM), "hv1": ("HV", HV_TEAM)},
        )
    finally:
        con.close()
    return html, data


def _row(rows: list[dict], agency: str, team: str | None = None) -> dict:
    [r] = [r for r in rows if r["agency"] == agency and (team is None or r["team"] == team)]
    return r


def test_quadrants_per_agency_and_team(run: tuple[Path, dict]) -> None:
    _, data = run
    ap = data["appropriateness"]
    csc = _row(ap["by_team"], "CSC", CSC_TEAM)
    # sw1's shares: the Early Help request, the MASH request, two off-system shares when asked
    assert csc["counts"]["request"] == 2 and csc["counts"]["disclose_on_request"] == 2
    assert csc["counts"]["offer"] == 1
    assert (csc["break_glass_shares"], csc["off_system_shares"]) == (1, 2)
    assert csc["quadrant"] == "over-open" and csc["open_rate"] == pytest.approx(3 / 5)
    hv = _row(ap["by_team"], "HV", HV_TEAM)
    assert hv["counts"]["withhold_offer"] == 2 and hv["counts"]["decline_offer"] == 1
    assert (hv["did_not_offer"], hv["offers_refused"], hv["overturned"]) == (2, 1, 1)
    assert hv["overturned_by_kind"]["withhold_offer"] == 1
    assert hv["quadrant"] == "over-cautious"
    # the police received what CSC shared outside the system (its team is not known here)
    pol = _row(ap["by_agency"], "POL")
    assert pol["counts"]["request"] == 2 and pol["off_system_shares"] == 2
    # the school's refusal was decided by the protocol rules and upheld on challenge
    sch_rules = _row(ap["by_team"], "SCH", "(protocol rules)")
    assert sch_rules["counts"]["refuse_request"] >= 1 and sch_rules["upheld"] == 1
    assert sch_rules["overturned"] == 0
    assert ap["challenges"] == {"raised": 2, "open": 0, "upheld": 1, "overturned": 1}
    assert ap["off_system_by_channel"] == {"phone_call": 1, "strategy_meeting": 1}
    assert sum(ap["quadrants"].values()) == len(ap["by_agency"])


def test_report_html_has_the_section_and_chart(run: tuple[Path, dict], world: World) -> None:
    path, data = run
    html = path.read_text("utf-8")
    assert 'id="appropriateness"' in html and 'id="appropriateness-chart"' in html
    assert re.search(
        r'<img class="chart" id="appropriateness-chart"[^>]*src="data:image/png;'
        r'base64,[A-Za-z0-9+/=]{200,}"',
        html,
    )
    team_table = html[html.index('id="appropriateness-team"') :]
    team_table = team_table[: team_table.index("</table>")]
    assert CSC_TEAM in team_table and 'data-quadrant="over-open"' in team_table
    assert 'data-quadrant="over-cautious"' in team_table
    assert "1 refusal(s) overturned on challenge" in team_table
    # the report built from the store's own accounts agrees with the explicit directory
    assert "2 of 5 shares outside the system" in team_table
    # no subject id, and no justification text, reaches the section
    section = html[html.index('id="appropriateness"') :]
    assert "strategy discussion with police" not in section
    for hub_id in [world.household, *world.members]:
        assert hub_id not in section
