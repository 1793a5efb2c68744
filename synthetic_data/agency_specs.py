"""The seven synthetic agencies' extract specs: file format, encoding, delimiter, date format and
column list of each export.

An `AgencySpec` is the single source of truth for an agency's export and for its onboarding
mapping (schemas/agencies/<code>.yaml, rendered by synthetic_data.mappings). The builders in
synthetic_data.agencies pick each agency's records from the population.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Col:
    source: str
    field: str | None  # canonical field; None for class drop
    cls: str = "identifier"  # identifier | payload | drop
    person: str = "subject"  # related-person slot, or subject
    fmt: str | None = None  # rendering style (see extracts.render)


@dataclass(frozen=True)
class AgencySpec:
    code: str
    name: str
    kind: str
    file_format: str  # csv | parquet
    file_name: str
    columns: tuple[Col, ...]
    date_format: str = "%Y-%m-%d"
    encoding: str = "utf-8"
    delimiter: str = ","
    quality: float = 1.0  # multiplies every corruption rate
    related_persons: dict[str, str] = field(default_factory=dict)  # slot -> default relationship
    schedule: str = "@daily"
    extract_kind: str = "snapshot"
    # share of subject records for which the agency holds a field at all (default: all)
    holds: dict[str, float] = field(default_factory=dict)


GP = AgencySpec(
    code="GP",
    name="GP practices (primary care)",
    kind="gp",
    file_format="csv",
    file_name="gp_registrations.csv",
    date_format="%Y-%m-%d",
    quality=0.5,
    columns=(
        Col("PatientID", "record_id"),
        Col("NHSNumber", "nhs_number", fmt="plain"),
        Col("Title", "title"),
        Col("Forename", "given_name"),
        Col("MiddleNames", "middle_names"),
        Col("Surname", "family_name"),
        Col("PreviousSurname", "other_names"),
        Col("DOB", "date_of_birth"),
        Col("Sex", "sex", fmt="MF"),
        Col("AddressLine1", "address_line_1"),
        Col("AddressLine2", "address_line_2"),
        Col("Town", "town"),
        Col("Postcode", "postcode"),
        Col("MobilePhone", "phone"),
        Col("Email", "email"),
        Col("RecordType", "record_type", "payload"),
        Col("PracticeCode", "gp_practice", "payload"),
        Col("RegistrationDate", "event_date", "payload"),
        Col("RegistrationStatus", "registration_status", "payload"),
        Col("LastUpdatedBy", None, "drop"),
    ),
)
HV = AgencySpec(
    code="HV",
    name="Health visiting (0-5 service)",
    kind="health_visiting",
    file_format="parquet",
    file_name="hv_caseload.parquet",
    quality=0.8,
    holds={"nhs_number": 0.97},
    related_persons={"mother": "mother"},
    columns=(
        Col("child_id", "record_id"),
        Col("child_nhs_number", "nhs_number", fmt="spaced"),
        Col("child_name", "full_name"),
        Col("child_dob", "date_of_birth", fmt="native"),
        Col("child_sex", "sex", fmt="word"),
        Col("address", "address", fmt="no_postcode"),
        Col("postcode", "postcode"),
        Col("mother_name", "full_name", person="mother"),
        Col("mother_dob", "date_of_birth", person="mother", fmt="native"),
        Col("mother_nhs_number", "nhs_number", person="mother", fmt="spaced"),
        Col("mother_phone", "phone", person="mother"),
        Col("record_type", "record_type", "payload"),
        Col("visit_type", "visit_type", "payload"),
        Col("visit_date", "event_date", "payload", fmt="native"),
        Col("imms_up_to_date", "immunisations_up_to_date", "payload", fmt="native"),
        Col("health_visitor", None, "drop"),
    ),
)
SCH = AgencySpec(
    code="SCH",
    name="Schools (education)",
    kind="school",
    file_format="csv",
    file_name="school_census.csv",
    encoding="cp1252",
    delimiter=";",
    date_format="%d/%m/%Y",
    quality=1.0,
    columns=(
        Col("PupilID", "record_id"),
        Col("UPN", "upn"),
        Col("Forename", "given_name"),
        Col("Surname", "family_name"),
        Col("DOB", "date_of_birth"),
        Col("Gender", "sex", fmt="MF"),
        Col("Address1", "address_line_1"),
        Col("Address2", "address_line_2"),
        Col("Town", "town"),
        Col("Postcode", "postcode"),
        Col("Contact1Name", "full_name", person="contact1"),
        Col("Contact1Relationship", "relationship", person="contact1", fmt="title"),
        Col("Contact1Phone", "phone", person="contact1"),
        Col("Contact1Email", "email", person="contact1"),
        Col("Contact2Name", "full_name", person="contact2"),
        Col("Contact2Relationship", "relationship", person="contact2", fmt="title"),
        Col("Contact2Phone", "phone", person="contact2"),
        Col("RecordType", "record_type", "payload"),
        Col("SchoolName", "school_name", "payload"),
        Col("YearGroup", "year_group", "payload"),
        Col("AttendancePct", "attendance_pct", "payload"),
        Col("Exclusions", "exclusions", "payload"),
        Col("SENStatus", "sen_status", "payload"),
        Col("FSM", "free_school_meals", "payload", fmt="YN"),
    ),
)
CSC = AgencySpec(
    code="CSC",
    name="Children's social care",
    kind="social_care",
    file_format="csv",
    file_name="csc_referrals.csv",
    date_format="%d/%m/%Y",
    quality=1.2,
    holds={"nhs_number": 0.6, "phone": 0.7},
    columns=(
        Col("ReferralID", "record_id"),
        Col("PersonID", None, "drop"),
        Col("FirstName", "given_name"),
        Col("LastName", "family_name"),
        Col("DOB", "date_of_birth"),
        Col("Gender", "sex", fmt="word"),
        Col("Address", "address", fmt="no_postcode"),
        Col("Postcode", "postcode"),
        Col("NHSNo", "nhs_number", fmt="plain"),
        Col("Parent1Name", "full_name", person="parent1"),
        Col("Parent1DOB", "date_of_birth", person="parent1"),
        Col("Parent1Relationship", "relationship", person="parent1", fmt="title"),
        Col("Parent1Phone", "phone", person="parent1"),
        Col("Parent2Name", "full_name", person="parent2"),
        Col("Parent2DOB", "date_of_birth", person="parent2"),
        Col("Parent2Relationship", "relationship", person="parent2", fmt="title"),
        Col("RecordType", "record_type", "payload"),
        Col("ReferralDate", "event_date", "payload"),
        Col("ReferralSource", "referral_source", "payload"),
        Col("ReferralReason", "referral_reason", "payload"),
        Col("PlanType", "plan_type", "payload"),
        Col("PlanStart", "plan_start", "payload"),
        Col("PlanEnd", "plan_end", "payload"),
        Col("LegalGateway", "legal_gateway", "payload"),
        Col("CaseNotes", "case_notes", "payload"),
        # The allocated worker is a named member of staff: outside the agreement, dropped. The
        # team they work in is the contact "who holds what" gives other practitioners.
        Col("AllocatedWorker", None, "drop"),
        Col("AllocatedTeam", "lead_practitioner_contact", "payload"),
    ),
)
POL = AgencySpec(
    code="POL",
    name="Police (public protection)",
    kind="police",
    file_format="csv",
    file_name="police_nominals.tsv",
    delimiter="\t",
    date_format="%d.%m.%Y",
    quality=2.0,
    holds={"phone": 0.5, "postcode": 0.85},
    related_persons={"other_party": "partner"},
    columns=(
        Col("NominalRef", "record_id"),
        Col("OccurrenceRef", None, "drop"),
        Col("Surname", "family_name", fmt="upper"),
        Col("Forenames", "given_name"),
        Col("DOB", "date_of_birth"),
        Col("DOBEstimated", "dob_is_estimated", fmt="YN"),
        Col("Sex", "sex", fmt="MF"),
        Col("HomeAddress", "address", fmt="upper_no_postcode"),
        Col("Postcode", "postcode"),
        Col("ContactNo", "phone"),
        Col("OtherPartyName", "full_name", person="other_party", fmt="surname_first"),
        Col("OtherPartyDOB", "date_of_birth", person="other_party"),
        Col("RecordType", "record_type", "payload"),
        Col("IncidentDate", "event_date", "payload"),
        Col("IncidentType", "incident_type", "payload"),
        Col("DomesticAbuse", "domestic_abuse", "payload", fmt="YN"),
        Col("RiskLevel", "risk_level", "payload"),
        Col("IncidentNotes", "incident_notes", "payload"),
    ),
)
HSG = AgencySpec(
    code="HSG",
    name="Housing (social landlord)",
    kind="housing",
    file_format="parquet",
    file_name="tenancies.parquet",
    date_format="%d/%m/%Y",
    quality=0.8,
    holds={"email": 0.6},
    columns=(
        Col("tenancy_ref", "record_id"),
        Col("lead_title", "title"),
        Col("lead_forename", "given_name"),
        Col("lead_surname", "family_name"),
        Col("lead_dob", "date_of_birth"),
        Col("lead_ni_number", None, "drop"),
        Col("uprn", "uprn", fmt="native"),
        Col("address_line_1", "address_line_1"),
        Col("address_line_2", "address_line_2"),
        Col("postcode", "postcode"),
        Col("phone", "phone"),
        Col("email", "email"),
        *[
            c
            for k in range(1, 5)
            for c in (
                Col(f"member{k}_name", "full_name", person=f"member{k}"),
                Col(f"member{k}_dob", "date_of_birth", person=f"member{k}"),
                Col(f"member{k}_relationship", "relationship", person=f"member{k}"),
            )
        ],
        Col("record_type", "record_type", "payload"),
        Col("tenancy_type", "tenancy_type", "payload"),
        Col("tenancy_start", "tenancy_start", "payload"),
        Col("tenancy_end", "tenancy_end", "payload"),
        Col("tenure_role", "tenure_role", "payload"),
        Col("arrears", "arrears_amount", "payload", fmt="native"),
        Col("eviction_risk", "eviction_risk", "payload", fmt="native"),
    ),
)
EH = AgencySpec(
    code="EH",
    name="Early Help (family support)",
    kind="early_help",
    file_format="csv",
    file_name="early_help_consent.csv",
    encoding="utf-8-sig",
    date_format="%d/%m/%Y",
    quality=1.0,
    columns=(
        Col("EHRowID", "record_id"),
        Col("FamilyRef", None, "drop"),
        Col("Forename", "given_name"),
        Col("Surname", "family_name"),
        Col("DOB", "date_of_birth"),
        Col("Gender", "sex", fmt="MF"),
        Col("Address1", "address_line_1"),
        Col("Postcode", "postcode"),
        Col("LeadAdult", "full_name", person="lead_adult"),
        Col("LeadAdultRelationship", "relationship", person="lead_adult", fmt="title"),
        Col("RecordType", "record_type", "payload"),
        Col("AssessmentType", "assessment_type", "payload"),
        Col("AssessmentOutcome", "assessment_outcome", "payload"),
        Col("AssessmentDate", "event_date", "payload"),
        Col("ConsentPurpose", "consent_purpose", "payload"),
        Col("ConsentStatus", "consent_status", "payload"),
        Col("ConsentDate", "consent_date", "payload"),
        Col("LeadPractitioner", "lead_practitioner_contact", "payload"),
        Col("Notes", "case_notes", "payload"),
    ),
)
SPECS: dict[str, AgencySpec] = {s.code: s for s in (GP, HV, SCH, CSC, POL, HSG, EH)}
