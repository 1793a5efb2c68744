"""Sign-off covers a protocol's known-to stage (issue 20): an agency whose involvement the stage
shows but that shares no detail under the protocol (EH under s.47) is a party and signs it;
until it has, the stage is refused, and once it has, the stage answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from access_world import S47, SW, access_hub
from test_api import NOW, World, build_world

from governance.known_to import KNOWN_TO, stage_protocol
from governance.relationships import Subject
from governance.signoff import ig_lead_of, parties, sign_off_all


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory)


def test_known_to_stage_waits_for_the_agencies_it_covers(world: World, tmp_path: Path) -> None:
    hub = access_hub(world, tmp_path, f"sqlite:///{tmp_path / 'gov.db'}", None, sign_off=True)
    assert hub.signoffs is not None
    proto = hub.gov.protocols[S47]
    stage_only = sorted(set(proto.known_to.agencies) - set(proto.agencies))
    assert stage_only == ["EH"] and parties(proto) == sorted(set(proto.agencies) | {"EH"})
    subject = Subject(world.person, world.household)

    def stage() -> tuple[bool, tuple[str, ...]]:
        d = hub.gov.evaluate(SW, stage_protocol(proto), subject, [("EH", KNOWN_TO)], NOW)
        return d.fields[0].allowed, d.fields[0].reasons

    # what sign-off covered before: every agency sharing detail signs; the stage is refused
    for a in sorted(proto.agencies):
        hub.signoffs.sign(hub.gov.audit, proto, a, ig_lead_of(a), "ig_lead", a)
    assert hub.gov.decide(SW, S47, subject, [("CSC", "plan_type")], NOW).fields[0].allowed
    allowed, reasons = stage()
    assert not allowed and "protocol_not_signed_off" in reasons
    # the partnership's set-up now has EH sign s.47 too; then the stage answers
    done = sign_off_all(hub.gov.audit, {S47: proto})
    assert [(s.protocol_id, s.agency) for s in done] == [(S47, "EH")]
    allowed, reasons = stage()
    assert allowed and "protocol_not_signed_off" not in reasons
