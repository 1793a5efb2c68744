"""docs/onboarding.md, run as written: every shell command on the page, in order, through the
real console scripts (`joinedup-bridge`, `joinedup-hub`, `python -m ...`) in a temporary folder,
with the page's own mapping for a new agency (FH) in a partnership mappings folder beside a
packaged one (GP). Then checks what the page promises: the new agency's batches were accepted
(not `unknown_agency`), its records linked to the GP's, the reports and marts written, and the
agency's local-id export correct and private."""

from __future__ import annotations

import csv
import importlib.metadata
import os
import re
import shlex
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from synthetic_data.generate import generate_population

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "onboarding.md"
PROGRAMS = ("joinedup-bridge", "joinedup-hub", "python", "mkdir", "cp")

# ~3 CPU-minutes (five bridge runs, two hub runs); a shared machine can take far longer.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def doc_steps(text: str) -> list[tuple[str, str, str]]:
    """(kind, content, target) in page order: ("bash", one command, ""), ("yaml", block, the
    file the text before it says to save it as)."""
    steps: list[tuple[str, str, str]] = []
    for m in re.finditer(r"```(bash|yaml)\n(.*?)```", text, re.S):
        if m.group(1) == "yaml":
            target = re.findall(r"Save this as `([^`]+)`", text[: m.start()])
            assert target, "a YAML block on the page without 'Save this as `<file>`' before it"
            steps.append(("yaml", m.group(2), target[-1]))
            continue
        for line in m.group(2).replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line and not line.startswith("#"):
                steps.append(("bash", line, ""))
    return steps


def console_scripts(bin_dir: Path) -> None:
    """`joinedup-bridge` / `joinedup-hub` as pyproject.toml declares them: the installed
    console script when the environment's metadata matches, else the same entry point run by
    this interpreter (a checkout whose pyproject gained a script since the last install)."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    installed = {
        ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
    }
    bin_dir.mkdir()
    for name in ("joinedup-bridge", "joinedup-hub"):
        target = declared[name]  # KeyError: the page uses a script the package does not have
        exe = Path(sys.executable).parent / name
        dest = bin_dir / name
        if exe.exists() and installed.get(name) == target:
            dest.symlink_to(exe)
        else:
            mod, fn = target.split(":")
            dest.write_text(
                f"#!{sys.executable}\nimport sys\nfrom {mod} import {fn}\nsys.exit({fn}())\n"
            )
            dest.chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)


def extracts(work: Path) -> None:
    """The two agencies' exports: GP's synthetic extract as is, and a Family Hub export with
    its own columns and date format (the page's mapping) made from the synthetic school
    census, so its children must link to their GP records across agencies."""
    pop = work / "pop"
    generate_population(pop, seed=3, people=300)
    gp = next((pop / "extracts" / "GP").glob("*.csv"))
    (work / "gp_registrations.csv").write_bytes(gp.read_bytes())
    sch = pd.read_csv(
        next((pop / "extracts" / "SCH").glob("*.csv")),
        sep=";",
        encoding="cp1252",
        dtype=str,
        keep_default_na=False,
    )
    dob = pd.to_datetime(sch["DOB"], format="%d/%m/%Y").dt.strftime("%d.%m.%Y")
    pd.DataFrame(
        {
            "Client Ref": "FH" + sch["PupilID"].str[-6:],
            "First Name": sch["Forename"],
            "Last Name": sch["Surname"],
            "Birth Date": dob,
            "Street": sch["Address1"],
            "Post Code": sch["Postcode"],
            "Seen On": "03.11.2025",
            "Key Worker": "kw-01",
        }
    ).to_csv(work / "fh_export.csv", index=False)


def test_onboarding_page_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run, mappings = tmp_path / "run", tmp_path / "mappings"
    console_scripts(tmp_path / "bin")
    (work / "schemas").symlink_to(REPO / "schemas")  # "cp schemas/agencies/..." from a checkout
    extracts(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOINEDUP")}
    env.update(
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}",
        PYTHONPATH=str(REPO),
        RUN=str(run),
        MAPPINGS=str(mappings),
        LINK_PASS="correct horse battery staple",
    )

    ran: list[str] = []
    for kind, content, target in doc_steps(DOC.read_text("utf-8")):
        if kind == "yaml":
            path = Path(os.path.expandvars(target.replace("$MAPPINGS", str(mappings))))
            path.write_text(content, "utf-8")
            continue
        words = shlex.split(content)
        if words[0] == "export":  # the page's folders: this test's own stand in for them
            assert {w.split("=")[0] for w in words[1:]} == {"RUN", "MAPPINGS"}
            continue
        assert words[0] in PROGRAMS, f"{DOC.name}: a command this test cannot run: {content}"
        r = subprocess.run(
            ["bash", "-c", content],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert r.returncode == 0, f"{content}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        if words[0] == "joinedup-bridge":  # no third-party warnings on an agency's console
            assert "Warning" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        ran.append(content)

    # The page covers the whole path (so this test does too).
    for must in (
        "keys init --partnership-lead",
        "keys export-link-key",
        "keys import-link-key",
        "keys import-hub-key",
        "keys show-public",
        "linkage.custody init-key",
        "joinedup-bridge validate",
        "joinedup-bridge run",
        "joinedup-hub run",
        "joinedup-hub ingest",
        "joinedup-hub link",
        "joinedup-hub households",
        "joinedup-hub marts",
        "joinedup-hub report",
        "reidentify",
    ):
        assert any(must in c for c in ran), f"{DOC.name} no longer shows `{must}`"

    con = duckdb.connect(str(run / "hub" / "warehouse.duckdb"), read_only=True)
    try:
        batches = con.execute(
            "SELECT agency, count(*), sum(rows_accepted) FROM batch GROUP BY 1 ORDER BY 1"
        ).fetchall()
        refused = con.execute("SELECT count(*) FROM refused_batch").fetchone()[0]
        fh_total, fh_linked = con.execute("""
            SELECT count(*), count(*) FILTER (WHERE EXISTS (
                SELECT 1 FROM record_person g WHERE g.agency = 'GP'
                AND g.person_id = f.person_id))
            FROM record_person f WHERE f.agency = 'FH'""").fetchone()
        runs = [
            r[0]
            for r in con.execute(
                "SELECT run_id FROM pipeline_stage"
                " WHERE stage = 'link_persons' ORDER BY finished_at"
            ).fetchall()
        ]
        fh_refs = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT record_ref FROM identifiers WHERE agency = 'FH'"
            ).fetchall()
        }
    finally:
        con.close()
    n_fh = len(pd.read_csv(work / "fh_export.csv"))
    # The new agency's batches (the first run's and the next week's) were accepted, whole.
    assert refused == 0
    assert [b[0] for b in batches] == ["FH", "GP"]
    assert batches[0][1:] == (2, 2 * n_fh)
    # Its children were linked to their GP records, across agencies, on pseudonyms.
    assert fh_total == n_fh
    assert fh_linked >= 0.9 * fh_total, (fh_linked, fh_total)
    # Two runs (the `run` and the stage-by-stage one), each with its IG report; the marts.
    assert len(runs) == 2 and runs[0] != runs[1]
    for run_id in runs:
        report = run / "hub" / "reports" / f"linkage_report_{run_id}.html"
        assert report.is_file() and "FH" in report.read_text("utf-8")
    assert (run / "hub" / "marts" / "analyst.duckdb").is_file()
    # The agency's own local ids for the refs the hub exported: all of its records, 0600.
    out = work / "fh_local_ids.csv"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with out.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["record_ref"] for r in rows} == fh_refs
    assert {r["local_id"] for r in rows} == set(
        pd.read_csv(work / "fh_export.csv", dtype=str)["Client Ref"]
    )
