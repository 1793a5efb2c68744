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
        expected = [
            r.seq for r in everything if (r.data().get("subject") or {}).get("person_id") == pid
        ]
        assert [e.audit_seq for e in rep.entries] == expected == sorted(outputs.seqs_by_person[pid])
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
        ("CSC", "plan_type", "CA1989_s47"),
        ("POL", "incident_type", "CA1989_s47"),
    }
    bg = next(e for e in rep.entries if e.break_glass)
    assert bg.break_glass["used"] and bg.user_id == "tm1"
    html = render_sar(rep)
    assert "injuries at school" in html
    assert "Children Act 1989, section 47" in html and "CA1989_s47" not in html
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
        rep,
        agency,
        ref_keys=KeyStore(outputs.run / "agency" / agency / "keys", agency).ref_keys(),
        lookup=lookup,
        audit_log=log,
        requesting_user="dpo@" + agency.lower(),
    )
    assert len(ids) == len(rep.record_refs[agency]) and all(i.found for i in ids)
    # all of the person's records at that agency are one real person
    assert len({i.display["given_name"] for i in ids}) == 1
    assert verify_audit_chain(log) == 1
    reqs = agency_identity_requests(log, rep.record_refs[agency])
    assert [(q["protocol_id"], q["outcome"], q["n_records"]) for q in reqs] == [
        ("subject_access_request", "answered", len(ids))
    ]
    # another person's refs find nothing in that log entry
    b_refs = _sar(outputs, outputs.person_ids[1]).record_refs.get(agency, [])
    assert agency_identity_requests(log, b_refs) == []
    html = render_sar(rep, ids, reqs)
    assert ids[0].display["given_name"] in html and "your subject access request" in html


# ------------------------------------------------------ plain English, identity once, 0600


def _visible_text(html: str) -> str:
    """What the reader sees: tag contents only (ids and classes in attributes are not read)."""
    import re

    return re.sub(r"<[^>]+>", " ", html)


def _codes() -> set[str]:
    """Every code the audit entries can carry: interactions, reasons (field and break-glass),
    legal gateways, protocol ids and roles."""
    import re

    import yaml

    import governance.decisions as dec
    from governance.decision_records import Interaction, Reason

    codes = {i.value for i in Interaction} | {r.value for r in Reason}
    src = Path(dec.__file__).read_text("utf-8")
    codes |= set(re.findall(r'problems\.append\("([a-z_]+)"\)', src)) | {"break_glass_invalid"}
    root = Path(dec.__file__).parents[1] / "schemas"
    for f in (root / "protocols").glob("*.yaml"):
        doc = yaml.safe_load(f.read_text("utf-8"))
        codes |= {doc["id"], doc["legal_gateway"]}
    codes |= set(yaml.safe_load((root / "roles.yaml").read_text("utf-8"))["roles"])
    return {c for c in codes if "_" in c}  # one-word codes ("offer", "accept") are words


def test_every_code_has_words() -> None:
    from governance.decision_records import Interaction, Reason
    from governance.reports import sar_words as w

    assert {i.value for i in Interaction} <= set(w.INTERACTIONS)
    assert {r.value for r in Reason} <= set(w.REASONS)
    for c in _codes():
        words = {w.interaction(c), w.reason(c), w.legal_basis(c), w.protocol(c), w.role(c)}
        # at least one table knows it (no fallback to the code with spaces for underscores)
        assert words - {c.replace("_", " ")}, c


def _agency_side_report(outputs: Outputs, tmp_path: Path, pid: str):  # noqa: ANN202
    rep = _sar(outputs, pid)
    truth = pd.read_parquet(outputs.run / "population" / "ground_truth" / "records.parquet")
    agency = max(sorted(rep.record_refs), key=lambda a: len(rep.record_refs[a]))
    own = truth[truth["agency"] == agency].astype({"record_id": str})
    # the agency's own system: its clean names, date of birth and address per record
    own = pd.DataFrame(
        {
            "record_id": own["record_id"],
            "given_name": own["clean_given_name"],
            "family_name": own["clean_family_name"],
            "date_of_birth": own["clean_date_of_birth"].dt.strftime("%d/%m/%Y"),
            "address": own["clean_address_line_1"],
            "postcode": own["clean_postcode"],
        }
    )
    ids = reidentify_for_sar(
        rep,
        agency,
        ref_keys=KeyStore(outputs.run / "agency" / agency / "keys", agency).ref_keys(),
        lookup=frame_lookup(own),
        audit_log=tmp_path / "a.log",
        requesting_user="dpo",
    )
    return rep, ids, own


def test_sar_reads_in_plain_english_with_identity_once(outputs: Outputs, tmp_path: Path) -> None:
    from governance.reports import sar_words as w

    for pid in outputs.person_ids[:2]:
        rep, ids, own = _agency_side_report(outputs, tmp_path, pid)
        # every record the hub lists for the agency is one the agency finds (how many there
        # are depends on the run's linkage: each session links with fresh keys)
        agency = max(sorted(rep.record_refs), key=lambda a: len(rep.record_refs[a]))
        assert len([i for i in ids if i.found]) == len(rep.record_refs[agency]) >= 1
        html = render_sar(rep, ids, agency_identity_requests(tmp_path / "a.log", []))
        text = _visible_text(html)
        leaked = sorted(c for c in _codes() if c in text)
        assert leaked == [], leaked
        # the identity block once: each of the person's details is printed one time in it (the
        # agency's records may disagree, e.g. a nickname: each value once, never repeated)
        import html as html_lib
        import re

        from governance.reports.sar import IDENTITY_LABELS

        assert html.count('id="identity"') == 1
        block = html.split('id="identity"', 1)[1].split("</ul>", 1)[0]
        lines = [html_lib.unescape(li) for li in re.findall(r"<li>(.*?)</li>", block)]
        for key in ("given_name", "family_name", "date_of_birth"):
            vals = {str(i.display[key]) for i in ids if i.found}
            shown = [ln for ln in lines if ln.startswith(IDENTITY_LABELS[key] + ": ")]
            assert len(shown) == 1, key
            first, _, also = shown[0].split(": ", 1)[1].partition(" (also recorded: ")
            printed = [first, *(also.rstrip(")").split("; ") if also else [])]
            assert sorted(printed) == sorted(vals), key  # each value once, none repeated
        # every refusal carries its reason in words
        refused = [f for e in rep.entries for f in e.refused]
        if pid == outputs.person_ids[1]:
            assert any(e.entry_type == "withheld_request" for e in rep.entries)
        for f in refused:
            assert f.reasons and all(w.reason(r) in text for r in f.reasons)
        for e in rep.entries:
            for r in e.interaction_reasons:
                assert w.reason(r) in text
            assert w.protocol(e.protocol_id) in text
        assert "What the terms mean" in text


def test_sar_file_is_owner_only_and_not_written_through_a_planted_link(
    outputs: Outputs, tmp_path: Path
) -> None:
    import os
    import stat

    from governance.reports.sar import write_sar_file

    rep, ids, _ = _agency_side_report(outputs, tmp_path, outputs.person_ids[0])
    html = render_sar(rep, ids)
    old = os.umask(0o022)  # the usual umask, under which write_text gives 0644
    try:
        out = tmp_path / "sar"
        out.mkdir()
        fresh = write_sar_file(out / "sar_fresh.html", html)
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
        assert fresh.read_text("utf-8") == html
        # attack 1: a world-readable file put there beforehand (by another account, or an old
        # run) must not keep its 0644 mode once the report is in it
        pre = out / "sar_pre.html"
        pre.write_text("old")
        os.chmod(pre, 0o644)
        write_sar_file(pre, html)
        assert stat.S_IMODE(pre.stat().st_mode) == 0o600 and pre.read_text("utf-8") == html
        # attack 2: a symlink planted at the report's path pointing at a readable file elsewhere:
        # the report must not be written through it
        victim = tmp_path / "public.html"
        victim.write_text("public page")
        os.chmod(victim, 0o644)
        link = out / "sar_link.html"
        link.symlink_to(victim)
        write_sar_file(link, html)
        assert victim.read_text("utf-8") == "public page"
        assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600
        assert sorted(p.name for p in out.iterdir()) == [
            "sar_fresh.html",
            "sar_link.html",
            "sar_pre.html",
        ]  # no temporary left behind
    finally:
        os.umask(old)
