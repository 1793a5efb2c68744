"""The demo partnership's access set-up and its manager's approval (issue 20).

A partnership puts its protocols in force before the first decision: each agency's IG lead
signs off every protocol version it is party to (governance.signoff, real sign-off rows and
audit entries). Protocols are assigned to agencies, teams and users by the shipped
schemas/assignments.yaml, which the demo's users match: sw.csc.1 is a member of
csc_assessment_1, which tm.csc.1 manages, so tm.csc.1 approves sw.csc.1's MASH break-glass
(the MASH protocol requires a manager's approval) as the workspace's Approvals page does.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

MANAGER = ("tm.csc.1", "team_manager", "CSC")


def put_protocols_in_force(audit: Any, at: dt.datetime) -> int:
    """Every controller signs off every protocol it is party to (skips what is signed)."""
    from governance.signoff import sign_off_all

    return len(sign_off_all(audit, at=at))


def approve_waiting(
    gov: Any, at: dt.datetime, manager: tuple[str, str, str] = MANAGER
) -> str | None:
    """The manager approves the oldest break-glass request waiting from their team, as on the
    workspace's Approvals page (one audit entry). Returns the grant id, or None if nothing
    was waiting."""
    from governance.approvals import ApprovalStore
    from governance.decisions import User

    store = ApprovalStore(gov.audit.engine)
    user = User(*manager)
    waiting = store.awaiting(gov, user)
    if not waiting:
        return None
    return store.decide(gov, user, waiting[0].request_id, True, at).grant_id


def team_cases(user_id: str, on: dt.date, relationships: Any) -> list[tuple[str, str]]:
    """(kind, subject id) of the current allocations of the teams `user_id` manages."""
    from governance.access import TeamRelationships, load_assignments

    team = TeamRelationships(relationships, load_assignments())
    return [(r.kind.value, r.subject_id) for r in team.team_allocations(user_id, on)]
