"""The IG lead's linkage audit report, built from a real pipeline run and a real audit log."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
from test_report_support import RUN1, RUN2, Outputs, build_outputs

from governance.audit import AuditLog
from governance.reports.linkage_report import build_report, collect_report_data

ARTEFACTS = Path(__file__).resolve().parent.parent / "var" / "test-artefacts"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory, orchestrated_run: Path) -> Outputs:
    return build_outputs(tmp_path_factory, orchestrated_run)


@pytest.fixture(scope="module")
def report(outputs: Outputs, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from linkage.config import HubPaths

    # written into a private copy of the run: the shared one is only read (xdist workers)
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(outputs.run, run, symlinks=True)
    audit = AuditLog(outputs.audit_url, create=False)
    html = build_report(
        HubPaths.for_run(run), RUN2, audit=audit, relationships=outputs.relationships
    )
    con = duckdb.connect(str(outputs.paths.warehouse), read_only=True)
    try:
        data = collect_report_data(
            con,
            RUN2,
            audit_entries=[r.data() for r in audit.entries()],
            relationships=outputs.relationships,
            marts_path=outputs.paths.marts / "analyst.duckdb",
        )
    finally:
        con.close()
    return html, data


def _wh(outputs: Outputs) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(outputs.paths.warehouse), read_only=True)


def test_linkage_numbers_match_the_warehouse(outputs: Outputs, report: tuple[Path, dict]) -> None:
    _, d = report
    con = _wh(outputs)
    try:
        batches = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT agency, sum(rows_read), sum(rows_accepted), sum(rows_quarantined) "
                "FROM batch GROUP BY 1"
            ).fetchall()
        }
        # run-2 re-linked what run-1 took in: no batches of its own, every run's total beside
        assert d["batches"]["per_agency"] == [] and d["batches"]["since"] is not None
        assert d["batches"]["all_runs"]["batches"] == sum(
            con.execute("SELECT count(*) FROM batch").fetchone()
        )
        assert d["batches"]["all_runs"]["rows_read"] == sum(b[0] for b in batches.values())
        first = collect_report_data(con, RUN1)["batches"]  # run-1 took in every batch
        assert {
            b["agency"]: (b["rows_read"], b["rows_accepted"], b["rows_quarantined"])
            for b in first["per_agency"]
        } == batches and first["since"] is None
        assert len(batches) >= 5
        open_q = con.execute(
            "SELECT count(*) FROM clerical_review WHERE status = 'open'"
        ).fetchone()[0]
        assert d["clerical"]["open"] == open_q > 0
        active = con.execute("SELECT count(*) FROM person WHERE status = 'active'").fetchone()[0]
        assert sum(s["persons"] for s in d["clusters"]["sizes"]) == active
        carried = con.execute(
            "SELECT count(*) FROM person WHERE status = 'active' AND first_run_id = ?", [RUN1]
        ).fetchone()[0]
        assert d["stability"]["persons"]["carried"] == carried
        assert not d["stability"]["persons"]["first_run"]
        # one agency pair recomputed independently
        rp = con.execute("SELECT DISTINCT person_id, agency FROM record_person").df()
        gp = set(rp.loc[rp.agency == "GP", "person_id"])
        sch = set(rp.loc[rp.agency == "SCH", "person_id"])
        row = next(m for m in d["match_rates"] if (m["agency_a"], m["agency_b"]) == ("SCH", "GP"))
        assert row["n_both"] == len(gp & sch) and row["n_a"] == len(sch)
        assert row["rate"] == pytest.approx(len(gp & sch) / len(sch))
        model = json.loads(con.execute("SELECT model_json FROM linkage_model").fetchone()[0])
    finally:
        con.close()
    lv = next(
        lvl
        for c in model["splink_settings"]["comparisons"]
        for lvl in c["comparison_levels"]
        if lvl.get("m_probability") and lvl.get("u_probability")
    )
    w = math.log2(lv["m_probability"] / lv["u_probability"])
    assert any(x["weight"] == pytest.approx(w) for x in d["model"]["levels"])


def test_counts_about_people_are_suppressed(report: tuple[Path, dict]) -> None:
    _, d = report
    t = d["threshold"]
    small = [m for m in d["match_rates"] if 0 < m["n_both"] < t]
    assert small, "the synthetic run should have some small agency-pair overlaps"
    for m in small:
        assert m["n_both_shown"] == f"<{t}" and m["rate"] is None
    for s in d["clusters"]["sizes"]:
        if 0 < s["persons"] < t:
            assert s["persons_shown"] == f"<{t}"
    assert any(c["persons"] == f"<{t}" for c in d["access"]["consent_coverage"])


def test_access_section_from_the_audit_log(outputs: Outputs, report: tuple[Path, dict]) -> None:
    html, d = report
    a = d["access"]
    assert a["n_decisions"] == sum(len(v) for v in outputs.seqs_by_person.values()) == 6
    got = {
        (r["protocol_id"], r["role"], r["outcome"]): r["decisions"]
        for r in a["by_protocol_role_outcome"]
    }
    assert got[("s47_child_protection_enquiry", "practitioner", "granted")] == 2
    assert got[("s47_child_protection_enquiry", "practitioner", "denied")] == 1  # no relationship
    assert got[("mash_information_sharing", "team_manager", "granted")] == 1  # break-glass
    assert got[("mash_information_sharing", "practitioner", "withheld_by_practitioner")] == 1
    assert got[("early_help_family_support", "practitioner", "partly_granted")] == 1
    [bg] = a["break_glass"]
    assert bg["used"] and bg["user_id"] == "tm1" and "injuries at school" in bg["justification"]
    assert a["over_open"]["override_grants"][0]["user_id"] == "tm1"
    assert [r["user_id"] for r in a["over_open"]["near_relationship_end"]] == ["tm1"]
    assert a["over_cautious"]["denied_with_consent"] == [
        {
            "protocol_id": "early_help_family_support",
            "reasons": "field_not_in_minimum_dataset",
            "fields": 1,
        }
    ]
    assert a["over_cautious"]["protocols_never_used"] == ["involvement_index"]
    text = html.read_text("utf-8")
    assert "injuries at school" in text and "involvement_index" in text


def test_report_is_self_contained_and_identifier_free(
    outputs: Outputs, report: tuple[Path, dict]
) -> None:
    html, _ = report
    text = html.read_text("utf-8")
    assert html.parent.relative_to(html.parents[2]) == outputs.paths.reports.relative_to(
        outputs.run
    )  # <run>/hub/reports, the default place
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    assert "<script" not in text
    # four linkage charts and the appropriateness section's (the run has an audit log)
    assert len(re.findall(r'<img[^>]+src="data:image/png;base64,', text)) == 5
    con = _wh(outputs)
    try:
        refs = [
            r[0] for r in con.execute("SELECT record_ref FROM record_person LIMIT 200").fetchall()
        ]
        toks = [
            r[0]
            for r in con.execute(
                "SELECT tok_family_name FROM identifiers WHERE "
                "tok_family_name IS NOT NULL LIMIT 200"
            ).fetchall()
        ]
    finally:
        con.close()
    assert not any(r in text for r in refs + toks)
    assert not any(p in text for p in outputs.person_ids)


def test_report_renders_in_headless_chromium(report: tuple[Path, dict]) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (make test installs it where apt-get is available)")
    html, _ = report
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    # A copy with a probe that writes every chart's drawn size into the DOM.
    probe = html.with_name("probe.html")
    probe.write_text(
        html.read_text("utf-8").replace(
            "</body>",
            """<script>
document.body.insertAdjacentHTML('beforeend', '<pre id="probe">' + JSON.stringify(
  [...document.querySelectorAll('img, svg')].map(e => {const r = e.getBoundingClientRect();
   return [e.id, e.naturalWidth || 0, Math.round(r.width), Math.round(r.height)];})) + '</pre>');
</script></body>""",
        ),
        "utf-8",
    )
    base = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
    ]
    dom = subprocess.run(
        [*base, "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    sizes = json.loads(re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout).group(1))
    assert len(sizes) == 5 and sizes[-1][0] == "appropriateness-chart"
    for ident, natural, w, h in sizes:
        assert natural > 0 and w > 0 and h > 0, f"chart {ident} not drawn"
    shot = ARTEFACTS / "linkage_report.png"
    shot.unlink(missing_ok=True)
    res = subprocess.run(
        [*base, "--window-size=1200,4000", f"--screenshot={shot}", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    # the report has no script of its own: any console message is a page error
    console = [
        ln
        for ln in (dom.stderr + res.stderr).splitlines()
        if ":CONSOLE" in ln and "probe" not in ln
    ]
    assert console == []


def test_pairs_and_consent_read_as_a_chart_and_a_compact_table(report: tuple[Path, dict]) -> None:
    """The 42 agency pairs are a heatmap with the numbers under it (details, for screen
    readers and for copying); the consent section lists only purposes and agencies with a
    recorded decision, the full table folded away under it."""
    import base64
    import io

    from PIL import Image

    html, d = report
    text = html.read_text("utf-8")
    m = re.search(
        r'<img class="chart" id="chart-match-rates" alt="([^"]+)" '
        r'src="data:image/png;base64,([^"]+)"',
        text,
    )
    assert m and "table below" in m.group(1)
    img = Image.open(io.BytesIO(base64.b64decode(m.group(2))))
    assert img.width > 300 and img.height > 300  # a grid, not an empty figure
    details = text[text.index('<details id="match-details">') :]
    details = details[: details.index("</details>")]
    agencies = {r["agency_a"] for r in d["match_rates"]}
    assert len(d["match_rates"]) == len(agencies) * (len(agencies) - 1) == 42
    assert details.count("<tr>") == 1 + 42 and 'id="match-table"' in details
    cov = d["access"]["consent_coverage"]
    rec = d["access"]["consent_recorded"]
    decided = {
        (c["purpose"], c["agency"]) for c in cov if c["state"] != "none" and c["persons"] != "0"
    }
    assert {(r["purpose"], r["agency"]) for r in rec["rows"]} == decided and decided
    assert len(rec["rows"]) < len(cov) / 4
    for r in rec["rows"]:  # the row's numbers are the full table's
        for state in ("given", "refused", "withdrawn", "none"):
            assert r[state] == next(
                c["persons"]
                for c in cov
                if (c["purpose"], c["agency"], c["state"]) == (r["purpose"], r["agency"], state)
            )
    assert set(rec["no_decisions"]) == {c["agency"] for c in cov} - {a for _, a in decided}
    compact = text[text.index('id="consent-recorded-table"') :]
    assert compact[: compact.index("</table>")].count("<tr>") == 1 + len(rec["rows"])
    full = text[text.index('<details id="consent-details">') :]
    assert full[: full.index("</details>")].count("<tr>") == 1 + len(cov)
    assert text.index('id="batches-window"') < text.index('id="batches-table"')


def test_report_file_name_is_portable(report: tuple[Path, dict]) -> None:
    """Airflow run ids hold ':' and '+', which Windows shares refuse; the file name does not."""
    from governance.reports.linkage_report import portable_name

    path, _ = report
    assert re.fullmatch(r"linkage_report_[A-Za-z0-9._-]+\.html", path.name)
    assert portable_name("manual__2026-12-03T07:30:00+00:00") == "manual__2026-12-03T07-30-00-00-00"
