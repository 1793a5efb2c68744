"""Closed vocabularies and code patterns of the synthetic agencies' category payload fields."""

from __future__ import annotations

import numpy as np

# Closed vocabularies of the synthetic agencies' category payload fields. The generator draws
# from them and the mappings declare them (`values:`), so the bridge nulls and reports any other
# value instead of carrying it to the hub (docs/contracts.md). A GP practice is an ODS code
# (`pattern:`). Fields with a canonical `allowed` list (plan_type, ...) need neither.
PRIMARY_SCHOOLS = tuple(
    f"{s} Primary School"
    for s in (
        "St Mary's",
        "Heaton",
        "Allerton",
        "Thornton",
        "Idle CE",
        "Wibsey",
        "Bowling Park",
        "Lister",
        "Girlington",
        "Wyke Manor",
    )
)
SECONDARY_SCHOOLS = (
    "Belle Vue Academy",
    "Titus Salt School",
    "Hanson Academy",
    "Carlton Bolling",
    "Beckfoot Thornton",
)
VOCABULARIES: dict[str, tuple[str, ...]] = {
    "registration_status": ("Registered", "Temporary"),
    "visit_type": ("new_birth", "6_8_week", "1_year", "2_2_half_year"),
    "school_name": PRIMARY_SCHOOLS + SECONDARY_SCHOOLS,
    "year_group": ("R", *(str(y) for y in range(1, 14))),
    "sen_status": ("None", "SEN support", "EHC plan"),
    "referral_source": ("Police", "School", "Health", "Family", "Anonymous", "Housing"),
    "referral_reason": (
        "Neglect",
        "Domestic abuse",
        "Emotional abuse",
        "Physical abuse",
        "Parental mental health",
        "Substance misuse",
    ),
    "legal_gateway": ("CA1989_s47", "CA1989_s17"),
    "incident_type": (
        "Domestic",
        "Concern for welfare",
        "Assault",
        "Theft",
        "ASB",
        "Missing person",
    ),
    "tenancy_type": ("Secure", "Introductory", "Assured", "Temporary"),
    "assessment_type": ("Family Support Plan", "Early Help Assessment"),
    "assessment_outcome": (
        "Open to Early Help",
        "Step up to CSC",
        "Closed - needs met",
        "Signposted",
    ),
    "consent_purpose": ("early_help", "mash", "health_information"),
    "lead_practitioner_contact": ("Early Help North", "Early Help South", "Family Hub Central"),
}
CODE_PATTERNS: dict[str, str] = {"gp_practice": r"[A-Z][0-9]{5}"}
# Vocabularies that differ by agency: each agency's own record kinds ("who holds what" shows
# them) and the teams children's social care allocates to (its lead practitioner contact: a
# team, never a named worker). They override VOCABULARIES in that agency's mapping.
AGENCY_VOCABULARIES: dict[str, dict[str, tuple[str, ...]]] = {
    "GP": {"record_type": ("GP registration",)},
    "HV": {"record_type": ("Health visiting contact",)},
    "SCH": {"record_type": ("School census pupil",)},
    "CSC": {
        "record_type": (
            "Referral",
            "Child in need plan",
            "Child protection plan",
            "Child looked after",
        ),
        "lead_practitioner_contact": (
            "CSC Assessment Team",
            "CSC Children in Need Team",
            "CSC Child Protection Team",
            "CSC Children in Care Team",
        ),
    },
    "POL": {"record_type": ("Domestic incident", "Incident")},
    "HSG": {"record_type": ("Tenancy",)},
    "EH": {"record_type": ("Early Help assessment", "Family support plan")},
}


def vocabulary(code: str, field: str) -> tuple[str, ...] | None:
    """The closed vocabulary of `field` in agency `code`'s extract (None: not closed)."""
    return AGENCY_VOCABULARIES.get(code, {}).get(field, VOCABULARIES.get(field))


def _v(field: str, code: str | None = None) -> np.ndarray:
    values = vocabulary(code, field) if code else VOCABULARIES[field]
    assert values is not None, field
    return np.array(values, dtype=object)
