"""Bridge commands start light: `joinedup-bridge --help` and key commands import none of the
heavy libraries (Great Expectations, Presidio/spaCy, PySpark, pandas) and print nothing on
stderr. Behaviour only; the timings are benchmarks/bench_cli_start.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("great_expectations", "presidio_analyzer", "spacy", "pyspark", "pandas")
# Runs the console script's body (pyproject.toml: joinedup-bridge = "ig_bridge.cli:main"),
# then reports which heavy packages ended up imported.
PROGRAM = """
import json, os, sys
from ig_bridge.cli import main
sys.argv[0] = "joinedup-bridge"
try:
    code = main()
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(os.environ["HEAVY"])))
sys.stdout.write("\\nHEAVY=" + json.dumps(heavy) + "\\n")
sys.exit(code)
"""


def bridge(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOINEDUP")}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONWARNINGS"] = "default"  # a warning anything raises at import would show
    env["HEAVY"] = json.dumps(HEAVY)
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def heavy(out: str) -> list[str]:
    return json.loads(out.rsplit("HEAVY=", 1)[1])


def test_help_imports_no_heavy_library_and_prints_no_warning() -> None:
    r = bridge("--help")
    assert r.returncode == 0, r.stderr
    assert "reidentify" in r.stdout and "keys" in r.stdout
    assert heavy(r.stdout) == []
    assert r.stderr == ""


def test_key_commands_import_no_heavy_library(tmp_path: Path) -> None:
    adir = tmp_path / "GP"
    r = bridge("keys", "init", "--partnership-lead", "--agency-dir", str(adir), "--agency", "GP")
    assert r.returncode == 0, r.stderr
    assert "created partnership link key v1" in r.stdout
    assert heavy(r.stdout) == []
    assert r.stderr == ""
    r = bridge("keys", "show-public", "--agency-dir", str(adir), "--agency", "GP")
    assert r.returncode == 0 and heavy(r.stdout) == [] and r.stderr == ""


def test_validation_module_defers_great_expectations_until_first_use() -> None:
    """ig_bridge.validate (imported by every validate/run) does not import GX itself; its first
    use does, without PySpark's pandas warning."""
    program = (
        "import sys, ig_bridge.validate as v\n"
        "assert 'great_expectations' not in sys.modules\n"
        "suite = v.gx.ExpectationSuite(name='s')\n"
        "assert 'great_expectations' in sys.modules\n"
        "print(type(suite).__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "default"}
    r = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ExpectationSuite"
    assert "PySpark" not in r.stderr and "FutureWarning" not in r.stderr


def test_validate_loads_great_expectations_only_for_a_row_with_a_problem(tmp_path: Path) -> None:
    """The header is a set comparison and an all-"ok" row passes every expectation by
    definition: `validate` on a clean extract never imports GX; a row with no record id
    (quarantined) does."""
    import yaml
    from test_bridge_field_validation import HEADER, MAPPING, ROWS

    mp = tmp_path / "gpr.yaml"
    mp.write_text(yaml.safe_dump(MAPPING))
    clean, bad = tmp_path / "clean.csv", tmp_path / "bad.csv"
    clean.write_text("\n".join([HEADER, ROWS[0], ROWS[4]]) + "\n", encoding="utf-8")
    bad.write_text("\n".join([HEADER, ROWS[0], ROWS[9]]) + "\n", encoding="utf-8")
    r = bridge("validate", str(clean), "--mapping", str(mp), "--agency-dir", str(tmp_path / "a"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "would be accepted" in r.stdout
    assert "great_expectations" not in heavy(r.stdout)
    r = bridge("validate", str(bad), "--mapping", str(mp), "--agency-dir", str(tmp_path / "a"))
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert "great_expectations" in heavy(r.stdout)


def test_run_renders_data_docs_only_for_a_batch_with_a_problem_or_when_asked(
    tmp_path: Path,
) -> None:
    """`run` on a clean extract lands it without Great Expectations (no Data Docs: every row
    passed); asked (`--data-docs`), it renders them anyway. (A batch with a row problem
    always gets them: tests/test_bridge_pipeline.py.)"""
    import yaml
    from test_bridge_field_validation import HEADER, MAPPING, ROWS

    from ig_bridge.split import run_bridge
    from synthetic_data.parties import provision_partnership

    run = tmp_path / "run"
    provision_partnership(run, ["GPR"])
    mp = tmp_path / "gpr.yaml"
    mp.write_text(yaml.safe_dump(MAPPING))
    agency, landing = run / "agency" / "GPR", run / "landing"
    extract = tmp_path / "clean.csv"
    extract.write_text("\n".join([HEADER, ROWS[0], ROWS[4]]) + "\n", encoding="utf-8")
    docs = agency / "reports" / "data_docs" / "index.html"

    r = bridge(
        "run", str(extract), "--mapping", str(mp), "--agency-dir", str(agency),
        "--landing", str(landing),
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "great_expectations" not in heavy(r.stdout)
    assert not docs.exists()
    res = run_bridge(extract, mp, agency, landing, data_docs=True)  # what --data-docs passes
    assert res.data_docs_dir is not None and docs.is_file()
