"""`joinedup-hub` and the mappings folder: honoured on every hub path (not only the DAG's), the
stages in the DAG's order, and an operator's mistakes named without a traceback. The whole
first run through the CLI is tests/test_onboarding_path.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from linkage import orchestration as orch
from linkage.cli import STAGE_OF_COMMAND, main
from linkage.config import SCHEMAS_DIR, HubPaths
from linkage.households import tenancy_agencies
from schemas.mapping import load_all_mappings


@pytest.fixture
def own_mappings(tmp_path: Path) -> Path:
    """A partnership's own folder: the packaged GP mapping, and a new housing association
    (code NHA, kind housing) the packaged folder does not have."""
    folder = tmp_path / "mappings"
    folder.mkdir()
    shutil.copy(SCHEMAS_DIR / "agencies" / "gp.yaml", folder / "gp.yaml")
    doc = yaml.safe_load((SCHEMAS_DIR / "agencies" / "hsg.yaml").read_text("utf-8"))
    doc["agency"].update(code="NHA", name="New Housing Association")
    (folder / "nha.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    assert set(load_all_mappings(folder)) == {"GP", "NHA"}  # a valid mapping folder
    return folder


def test_mappings_folder_is_honoured_outside_the_dag(
    own_mappings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOINEDUP_MAPPINGS_DIR", raising=False)
    packaged = HubPaths.for_run(tmp_path / "run")
    assert packaged.mappings == SCHEMAS_DIR / "agencies"
    assert tenancy_agencies() == ["HSG"]
    monkeypatch.setenv("JOINEDUP_MAPPINGS_DIR", str(own_mappings))
    # every way the hub builds its paths reads the variable, as the DAG's hub_paths does ...
    assert HubPaths.for_run(tmp_path / "run").mappings == own_mappings
    assert HubPaths(hub=tmp_path / "h", landing=tmp_path / "l").mappings == own_mappings
    assert orch.hub_paths(tmp_path / "run").mappings == own_mappings
    # ... and households' tenancy agencies come from it, not from the packaged folder
    assert tenancy_agencies() == ["NHA"]
    # an explicit folder (joinedup-hub --mappings-dir) wins over the variable
    assert (
        orch.hub_paths(tmp_path / "run", SCHEMAS_DIR / "agencies").mappings
        == (SCHEMAS_DIR / "agencies").resolve()
    )
    assert tenancy_agencies(SCHEMAS_DIR / "agencies") == ["HSG"]


def test_cli_stages_are_the_dags_stages_in_order() -> None:
    assert tuple(STAGE_OF_COMMAND.values()) == orch.HUB_STAGES
    assert orch.HUB_STAGES == ("link_persons", "households", "marts", "report")
    with pytest.raises(ValueError, match="unknown hub stage"):
        orch.run_stage("enrich", "r1", Path("/nonexistent"))


def test_operator_mistakes_are_named(tmp_path: Path, own_mappings: Path, capsys) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        main(
            [
                "run",
                "--run-dir",
                str(tmp_path / "run"),
                "--mappings-dir",
                str(tmp_path / "no-such-folder"),
            ]
        )
    # households before any link: which warehouse, and what to run first
    with pytest.raises(SystemExit, match="joinedup-hub link"):
        main(
            ["households", "--run-dir", str(tmp_path / "run"), "--mappings-dir", str(own_mappings)]
        )
    # a stage that fails (the report stage without the hub's audit key) exits 2 with the
    # reason on stderr, not a traceback
    assert (
        main(
            [
                "report",
                "--run-dir",
                str(tmp_path / "run"),
                "--mappings-dir",
                str(own_mappings),
                "--run-id",
                "r1",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "failed report" in err and "Traceback" not in err


def test_ingest_needs_the_hub_key_then_reports_nothing_landed(
    tmp_path: Path, own_mappings: Path, capsys
) -> None:
    from linkage.custody import main as custody

    args = ["ingest", "--run-dir", str(tmp_path / "run"), "--mappings-dir", str(own_mappings)]
    assert main(args) == 2  # the hub operator has not created the sealing key yet
    assert "HubKeyMissing" in capsys.readouterr().err
    assert custody(["init-key", "--hub-dir", str(tmp_path / "run" / "hub")]) == 0
    assert main(args) == 0
    assert "nothing landed" in capsys.readouterr().out
