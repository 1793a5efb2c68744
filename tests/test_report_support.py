"""Shared builders for the outputs tests (marts, report, SAR); no tests of its own.

One real pipeline run per session, built on helper-7's `orchestrated_run` (1,500 synthetic
people, every agency bridged and landed): ingest, person linkage, households, a second
linkage run that reuses the stored model (so lineage/stability has a previous run), marts; plus a
governance audit log holding a known mix of decisions.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import built_once

RUN1, RUN2 = "run-1", "run-2"
AT = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


@dataclass
class Outputs:
    run: Path
    paths: object  # linkage.config.HubPaths
    audit_url: str
    relationships: pd.DataFrame
    person_ids: list[str]  # persons the decisions are about
    seqs_by_person: dict[str, list[int]]


def build_outputs(tmp_path_factory: pytest.TempPathFactory, orchestrated: Path) -> Outputs:
    from linkage.config import HubPaths
    from linkage.person_linkage import LinkageSettings, link_persons, stored_model
    from linkage.pipeline import stage_households, stage_ingest, stage_link_persons, stage_marts

    def build(base: Path) -> None:
        run = base / "run"
        shutil.copytree(orchestrated, run, symlinks=True)
        paths = HubPaths.for_run(run)
        stage_ingest(paths)
        stage_link_persons(paths, RUN1)
        stage_households(paths, RUN1)
        con = duckdb.connect(str(paths.warehouse))
        try:
            version = con.execute(
                "SELECT model_version FROM linkage_run WHERE run_id = ?", [RUN1]
            ).fetchone()[0]
            link_persons(
                con, RUN2, LinkageSettings(model=stored_model(con, version), show_progress=False)
            )
        finally:
            con.close()
        stage_households(paths, RUN2)
        stage_marts(paths, RUN2)
        _governance(run, paths)

    # once per session, shared by the xdist workers (readers only: tests copy it to change it)
    base = built_once(tmp_path_factory, "outputs_run", build)
    run = base / "run"
    paths = HubPaths.for_run(run)
    import json

    meta = json.loads((base / "run" / "hub" / "gov_meta.json").read_text())
    return Outputs(
        run,
        paths,
        meta["audit_url"],
        pd.read_json(run / "hub" / "rel.json"),
        meta["person_ids"],
        {k: v for k, v in meta["seqs"].items()},
    )


def _governance(run: Path, paths: object) -> None:
    """A governance store with decisions about three persons of the run, of every kind the
    report and SAR must show: consent grant, statutory gateway, break-glass, denial although
    consent was given, a grant near the end of a relationship, a withheld request."""
    import json

    from governance.audit import AuditLog
    from governance.consent import ConsentRegistry
    from governance.decision_records import BreakGlass
    from governance.decisions import Governance, User
    from governance.relationships import RelationshipRegistry, Subject

    con = duckdb.connect(str(paths.warehouse), read_only=True)
    try:
        rows = con.execute("""
            SELECT p.person_id, min(m.household_id) FROM person p
            JOIN household_member m USING (person_id)
            WHERE p.status = 'active' AND p.n_agencies >= 2
            GROUP BY 1 ORDER BY 1 LIMIT 3""").fetchall()
    finally:
        con.close()
    (a, ha), (b, hb), (c, hc) = rows
    rel = pd.DataFrame(
        [
            {
                "user_id": "sw1",
                "kind": "person",
                "subject_id": a,
                "start": "2026-01-01",
                "end": None,
            },
            {
                "user_id": "sw1",
                "kind": "household",
                "subject_id": hb,
                "start": "2026-01-01",
                "end": None,
            },
            {
                "user_id": "tm1",
                "kind": "person",
                "subject_id": a,
                "start": "2026-01-01",
                "end": "2026-06-03",
            },
            {
                "user_id": "ehw",
                "kind": "person",
                "subject_id": c,
                "start": "2026-01-01",
                "end": None,
            },
        ]
    )
    consent = ConsentRegistry()
    consent.record(a, "EH", "mash", "refused", dt.date(2026, 1, 5))
    consent.record(c, "SCH", "early_help", "given", dt.date(2026, 2, 1))
    url = f"sqlite:///{run / 'hub' / 'governance.db'}"
    gov = Governance(AuditLog(url), consent, RelationshipRegistry.from_frame(rel))
    sw1 = User("sw1", "practitioner", "CSC")
    tm1 = User("tm1", "team_manager", "CSC")
    ehw = User("ehw", "practitioner", "EH")
    seqs: dict[str, list[int]] = {a: [], b: [], c: []}
    d = gov.decide(
        sw1,
        "s47_child_protection_enquiry",
        Subject(a, ha),
        [("CSC", "plan_type"), ("POL", "incident_type")],
        AT,
    )
    seqs[a].append(d.audit_seq)
    d = gov.decide(
        tm1,
        "mash_information_sharing",
        Subject(a, ha),
        [("POL", "risk_level"), ("EH", "assessment_outcome")],
        AT,
        BreakGlass(
            "risk_of_significant_harm",
            "Strategy meeting today: child reported injuries at school",
            AT - dt.timedelta(hours=1),
            8,
        ),
    )
    seqs[a].append(d.audit_seq)
    d = gov.decide(
        sw1, "s47_child_protection_enquiry", Subject(b, hb), [("SCH", "attendance_pct")], AT
    )
    seqs[b].append(d.audit_seq)
    seqs[b].append(
        gov.record_withheld_request(
            sw1, "mash_information_sharing", Subject(b, hb), "not_proportionate", AT
        )
    )
    d = gov.decide(
        ehw,
        "early_help_family_support",
        Subject(c, hc),
        [("SCH", "attendance_pct"), ("SCH", "case_notes")],
        AT,
    )
    seqs[c].append(d.audit_seq)
    # an insider with no relationship: denied, and still about person c
    d = gov.decide(
        User("snoop", "practitioner", "POL"),
        "s47_child_protection_enquiry",
        Subject(c, hc),
        [("CSC", "plan_type")],
        AT,
    )
    seqs[c].append(d.audit_seq)
    (run / "hub" / "gov_meta.json").write_text(
        json.dumps({"audit_url": url, "person_ids": [a, b, c], "seqs": seqs})
    )
    rel.to_json(run / "hub" / "rel.json")
