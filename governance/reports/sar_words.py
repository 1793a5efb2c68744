"""Plain-English words for the codes a subject access report would otherwise show.

The person who asked reads the report, not an engineer: every interaction, reason, legal
basis, protocol, agency, role and field code is turned into words here. Protocol titles and
agency names come from the YAML the partnership maintains (schemas/protocols, schemas/agencies);
the rest is a small table kept next to the enums it translates (tests check it is complete).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

INTERACTIONS = {
    "offer": "an agency offered information",
    "request": "a practitioner asked for information",
    "disclose_on_request": "information was shared because a practitioner asked for it",
    "accept": "offered information was accepted and shown",
    "withhold_offer": "an agency did not offer information",
    "withhold_request": "the request was not answered",
    "refuse_request": "a request for information was refused",
    "decline_offer": "offered information was not shown",
}

REASONS = {
    "unknown_protocol": "the request did not name an information-sharing agreement we have",
    "protocol_not_in_force": "the information-sharing agreement was not in force on that date",
    "unknown_role": "the person asking did not have a recognised job role",
    "role_not_in_protocol": "the person asking is not in a job role the agreement covers",
    "role_not_row_level": "the person asking may only see statistics, not individual records",
    "no_legitimate_relationship": "the person asking was not working with you or your family",
    "agency_not_in_protocol": "that organisation is not part of the agreement",
    "field_not_in_minimum_dataset": "that information is more than the agreement allows",
    "no_consent": "you had not given consent",
    "consent_refused": "you had refused consent",
    "consent_withdrawn": "you had withdrawn consent",
    "consent_expired": "the consent you gave had passed its review date",
    "consent_out_of_scope": "the consent you gave did not cover that agency or information",
    "consent_given": "you had given consent",
    "statutory_gateway": "the law allows it without consent",
    "break_glass_override": "an emergency override to protect someone from serious harm",
    "break_glass_invalid": "the emergency override asked for was not valid",
    "break_glass_not_permitted_by_protocol": "the agreement does not allow emergency overrides",
    "role_may_not_break_glass": "the person asking may not use an emergency override",
    "break_glass_category_not_permitted": "the emergency reason given is not one the agreement "
    "allows",
    "justification_missing_or_too_short": "no proper reason was given for the emergency override",
    "justification_contains_identifier": "the reason given for the emergency override contained "
    "personal details",
    "break_glass_duration_exceeds_protocol": "the emergency override was asked for longer than "
    "the agreement allows",
    "break_glass_not_started": "the emergency override had not started yet",
    "break_glass_expired": "the emergency override had run out",
}

# Legal bases a field can be shared on (a protocol's legal_gateway, or consent).
LEGAL_BASES = {
    "consent": "your consent",
    "CA1989_s17": "the Children Act 1989, section 17 (support for children in need)",
    "CA1989_s47": "the Children Act 1989, section 47 (enquiries to protect a child from harm)",
    "CA2004_s10": "the Children Act 2004, section 10 (the duty to co-operate)",
    "CA2004_s11": "the Children Act 2004, section 11 (the duty to safeguard children)",
}

ROLES = {
    "practitioner": "a practitioner (for example a social worker)",
    "team_manager": "a team manager",
    "analyst": "an analyst",
    "ig_lead": "the information governance lead",
    "caldicott_guardian": "the Caldicott guardian",
    "data_officer": "an agency data officer",
    "administrator": "an administrator",
}

ENTRY_TYPES = {
    "decision": "information was looked at",
    "withheld_request": "a request was turned down before anything was looked at",
    # the decision log (governance.sharing): what was decided outside the protocol rules
    "sharing_offer": "an agency offered information about you to another agency",
    "sharing_offer_response": "an agency answered an offer of information about you",
    "sharing_not_offered": "an agency decided not to offer information about you",
    "sharing_not_requested": "a worker decided not to ask another agency about you",
    "sharing_off_system": "information about you was shared outside the system (at a meeting, "
    "by phone or in writing), and recorded afterwards",
    "sharing_challenge": "a decision not to share information about you was challenged",
}


def _words(code: str) -> str:
    return code.replace("_", " ")


@cache
def _protocol_titles() -> dict[str, str]:
    out = {"subject_access_request": "your subject access request"}
    root = resources.files("schemas") / "protocols"
    for f in root.iterdir():
        if f.name.endswith(".yaml"):
            doc = yaml.safe_load(f.read_text("utf-8")) or {}
            if doc.get("id"):
                out[str(doc["id"])] = str(doc.get("title") or _words(str(doc["id"])))
    return out


@cache
def _agency_names() -> dict[str, str]:
    """Agency names from the packaged mappings, then the hub's own mappings folder
    (JOINEDUP_MAPPINGS_DIR), so a newly onboarded agency is named too."""
    from linkage.config import default_mappings_dir

    out: dict[str, str] = {}
    for root in (resources.files("schemas") / "agencies", default_mappings_dir()):
        if not root.is_dir():
            continue
        for f in sorted(root.iterdir(), key=lambda f: f.name):
            if f.name.endswith(".yaml"):
                a = (yaml.safe_load(f.read_text("utf-8")) or {}).get("agency") or {}
                if a.get("code"):
                    out[str(a["code"])] = str(a.get("name") or a["code"])
    return out


def interaction(code: str) -> str:
    return INTERACTIONS.get(code, _words(code))


def reason(code: str) -> str:
    return REASONS.get(code, _words(code))


def legal_basis(code: str | None) -> str:
    if not code:
        return "no legal basis recorded"
    return LEGAL_BASES.get(code, _words(code))


def protocol(code: str | None) -> str:
    if not code or code == "None":
        return "no agreement named"
    return _protocol_titles().get(code, _words(code))


def agency(code: str) -> str:
    return _agency_names().get(code, code)


def role(code: str | None) -> str:
    return ROLES.get(code or "", _words(code or "unknown role"))


def field_name(code: str) -> str:
    return _words(code).replace(" pct", " (%)")


def entry_type(code: str) -> str:
    return ENTRY_TYPES.get(code, _words(code))


def protocol_purpose(code: str) -> str:
    """The agreement's purpose from its YAML, in the partnership's own words."""
    root = resources.files("schemas") / "protocols"
    for f in root.iterdir():
        if f.name.endswith(".yaml"):
            doc = yaml.safe_load(f.read_text("utf-8")) or {}
            if doc.get("id") == code:
                return " ".join(str(doc.get("purpose") or "").split())
    if code == "subject_access_request":
        return "Finding your records so that this report could be addressed to you."
    return ""


def legal_basis_explained(code: str) -> str:
    if code == "consent":
        return "You agreed that this information could be shared for this purpose."
    return (
        f"Information may be shared under {legal_basis(code)} even without consent, "
        "where it is needed for that purpose."
    )
