"""Who decides a challenged refusal: the IG lead or the Caldicott guardian it was addressed to.

A practitioner challenges a refusal (governance.sharing.SharingLog.challenge) to one of two
people the partnership's information-sharing agreement names: the information governance lead
or the Caldicott guardian (the senior person responsible for protecting the confidentiality of
health and care information and for lawful, appropriate sharing). The challenge is decided by
someone holding the role it was addressed to, as that role:
- the decider's role is `ig_lead` or `caldicott_guardian` (schemas/roles.yaml);
- `decided_as` is that role (an IG lead does not sign as the Caldicott guardian);
- the challenge was addressed to that role;
- where the deployment names the deciders (schemas/assignments.yaml `challenge_deciders`), the
  decider is one of those named for the role.
"""

from __future__ import annotations

from typing import Any

from governance.decisions import User

DECIDER_ROLES = frozenset({"ig_lead", "caldicott_guardian"})


def decider_refusal(gov: Any, user: User, as_: str, addressed_to: str) -> str | None:
    """None if `user` may decide a challenge addressed to `addressed_to` as `as_`; else the
    refusal code."""
    if user.role not in DECIDER_ROLES:
        return "role_may_not_decide_challenges"
    if as_ != user.role:
        return "decided_as_not_your_role"
    if addressed_to != user.role:
        return "challenge_addressed_to_other_role"
    access = getattr(gov, "access", None)
    named = access.assignments.challenge_deciders.get(user.role) if access is not None else None
    if named and user.user_id not in named:
        return "not_a_named_decider"
    return None
