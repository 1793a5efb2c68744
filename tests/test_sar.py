"""Subject access report: complete (every audit entry about the person) and exclusive (nothing
about anyone else); re-identification done by the originating agency with its own keys."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from test_report_support import Outputs, build_outputs

from governance.audit import AuditLog
from governance.reports.sar import (
    agency_identity_requests,
    collect_sar,
    reidentify_for_sar,
    render_sar,
)
from ig_bridge.keys import KeyStore
from ig_bridge.reidentify import frame_lookup, verify_audit_chain


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, orchestrated_run: Path) -> Outputs:
    return build_outputs(tmp_path_factory, orchestrated_run)


def _sar(outputs: Outputs, person_id: str):  # noqa: ANN202
    con = duckdb.connect(str(outputs.paths.warehouse), read_only=True)
    try:
        return collect_sar(AuditLog(outputs.audit_url, create=False), person_id, con)
    finally:
        con.close()


def test_sar_is_complete_and_exclusive(outputs: Outputs) -> None:
    audit = AuditLog(outputs.audit_url, create=False)
    everything = list(audit.entries())
    for pid in outputs.person_ids:
        rep = _sar(outputs, pid)
        # complete: every chained entry whose subject is this person, and only those
        expected = [r.seq for r in everything
                    if (r.data().get("subject") or {}).get("person_id") == pid]
        assert [e.audit_seq for e in rep.entries] == expected == sorted(
            outputs.seqs_by_person[pid])
        html = render_sar(rep)
        for other in outputs.person_ids:
            if other != pid:
                assert other not in html
        assert html.count('class="entry"') == len(expected)


def test_sar_shows_protocols_users_fields_basis_and_break_glass(outputs: Outputs) -> None:
    a = outputs.person_ids[0]
    rep = _sar(outputs, a)
    assert rep.protocols == ["mash_information_sharing", "s47_child_protection_enquiry"]
    assert rep.users == ["sw1", "tm1"]
    s47 = next(e for e in rep.entries if e.protocol_id == "s47_child_protection_enquiry")
    assert {(f.agency, f.field, f.legal_basis) for f in s47.disclosed} == {
        ("CSC", "plan_type", "CA1989_s47"), ("POL", "incident_type", "CA1989_s47")}
    bg = next(e for e in rep.entries if e.break_glass)
    assert bg.break_glass["used"] and bg.user_id == "tm1"
    html = render_sar(rep)
    assert "injuries at school" in html and "CA1989_s47" in html
    # the household-relationship decision about b never leaks into a's report
    assert all(e.protocol_id != "early_help_family_support" for e in rep.entries)


def test_reidentification_by_the_originating_agency(outputs: Outputs, tmp_path: Path) -> None:
    a = outputs.person_ids[0]
    rep = _sar(outputs, a)
    assert len(rep.record_refs) >= 2
    truth = pd.read_parquet(outputs.run / "population" / "ground_truth" / "records.parquet")
    agency = sorted(rep.record_refs)[0]
    # Playing the agency: its own system is the ground-truth extract; its keys its KeyStore.
    own = truth[truth["agency"] == agency].astype({"record_id": str})
    lookup = frame_lookup(own.assign(given_name=own["person_id"].astype(str)))
    log = tmp_path / "agency_audit.log"
    ids = reidentify_for_sar(
        rep, agency, ref_keys=KeyStore(outputs.run / "agency" / agency / "keys", agency)
        .ref_keys(), lookup=lookup, audit_log=log, requesting_user="dpo@" + agency.lower())
    assert len(ids) == len(rep.record_refs[agency]) and all(i.found for i in ids)
    # all of the person's records at that agency are one real person
    assert len({i.display["given_name"] for i in ids}) == 1
    assert verify_audit_chain(log) == 1
    reqs = agency_identity_requests(log, rep.record_refs[agency])
    assert [(q["protocol_id"], q["outcome"], q["n_records"]) for q in reqs] == [
        ("subject_access_request", "answered", len(ids))]
    # another person's refs find nothing in that log entry
    b_refs = _sar(outputs, outputs.person_ids[1]).record_refs.get(agency, [])
    assert agency_identity_requests(log, b_refs) == []
    html = render_sar(rep, ids, reqs)
    assert ids[0].display["given_name"] in html and "subject_access_request" in html
