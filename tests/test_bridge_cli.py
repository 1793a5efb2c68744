"""`joinedup-bridge` through main([...]): key lifecycle, refusal without the partnership key,
signed batches the hub can verify, rotation, and agency-side re-identification."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sealed_batches import open_batch

from ig_bridge.cli import main
from ig_bridge.keys import KeyStore
from ig_bridge.landing import landed_batches
from ig_bridge.manifest import load_public_keys, verify_batch
from ig_bridge.reidentify import verify_audit_chain
from ig_bridge.sealing import create_hub_sealing_key, export_hub_public_key

MAPPING = {
    "mapping_version": 1,
    "agency": {"code": "SCH", "name": "Schools", "kind": "school"},
    "source": {
        "format": "csv",
        "encoding": "utf-8",
        "delimiter": ",",
        "date_formats": ["%d/%m/%Y"],
    },
    "columns": [
        {"source": "Ref", "field": "record_id", "class": "identifier"},
        {"source": "Forename", "field": "given_name", "class": "identifier"},
        {"source": "Surname", "field": "family_name", "class": "identifier"},
        {"source": "DOB", "field": "date_of_birth", "class": "identifier"},
        {"source": "Postcode", "field": "postcode", "class": "identifier"},
    ],
}
EXTRACT = (
    "Ref,Forename,Surname,DOB,Postcode\n"
    "R1,Amelia,Smith,04/03/2012,LS1 4AB\n"
    "R2,Benedict,Okonkwo,01/12/2011,M1 1AA\n"
)
PASS = "correct horse battery staple"


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JU_PASS", PASS)
    mp = tmp_path / "sch.yaml"
    mp.write_text(yaml.safe_dump(MAPPING))
    ext = tmp_path / "pupils.csv"
    ext.write_text(EXTRACT)
    return tmp_path, mp, ext


def keys(*args: str) -> int:
    return main(["keys", *args])


def run(tmp: Path, mp: Path, ext: Path) -> int:
    return main(
        [
            "run",
            str(ext),
            "--mapping",
            str(mp),
            "--agency-dir",
            str(tmp / "SCH"),
            "--landing",
            str(tmp / "landing"),
        ]
    )


def test_bridge_refuses_without_partnership_key_then_lands_after_import(world, capsys) -> None:
    tmp, mp, ext = world
    assert keys("init", "--agency-dir", str(tmp / "SCH"), "--agency", "SCH") == 0
    store = KeyStore(tmp / "SCH" / "keys", "SCH")
    assert store.versions("link") == [] and store.versions("ref") == [1]
    assert "import-link-key" in capsys.readouterr().err

    assert run(tmp, mp, ext) == 2  # never a silently made link key
    assert "import-link-key" in capsys.readouterr().err
    assert store.versions("link") == [] and landed_batches(tmp / "landing", "SCH") == []

    # The partnership lead (here the CSC bridge) creates and exports the one linkage key.
    lead = ["--agency-dir", str(tmp / "CSC"), "--agency", "CSC"]
    assert keys("init", *lead, "--partnership-lead") == 0
    wrapped = tmp / "link.wrapped.json"
    assert (
        keys("export-link-key", *lead, "--file", str(wrapped), "--passphrase-env", "JU_PASS") == 0
    )
    assert wrapped.stat().st_mode & 0o077 == 0
    secret = json.loads((tmp / "CSC" / "keys" / "link_key.v1.json").read_text())["secret"]
    assert secret not in wrapped.read_text()

    sch = ["--agency-dir", str(tmp / "SCH"), "--agency", "SCH"]
    assert keys("import-link-key", *sch, "--file", str(wrapped), "--passphrase-env", "JU_PASS") == 0
    assert store.link_key().key_check == KeyStore(tmp / "CSC" / "keys", "CSC").link_key().key_check

    hub = tmp / "hub" / "public_keys"
    assert keys("show-public", *sch, "--out", str(hub)) == 0
    assert "SCH-ed25519-v1 Ed25519" in capsys.readouterr().out

    # No hub sealing key imported yet: the bridge refuses to land anything.
    assert run(tmp, mp, ext) == 2
    assert "import-hub-key" in capsys.readouterr().err
    assert landed_batches(tmp / "landing", "SCH") == []
    assert not list((tmp / "SCH" / "work").glob("*"))  # no plaintext left behind
    # The hub creates its sealing key pair and sends the public record; the agency imports it.
    create_hub_sealing_key(tmp / "hub" / "keys")
    record = export_hub_public_key(tmp / "hub" / "keys", tmp / "hub_sealing_key.v1.json")
    assert keys("import-hub-key", *sch, "--file", str(record)) == 0
    assert "hub-x25519-v1" in capsys.readouterr().out
    other = create_hub_sealing_key(tmp / "other_hub" / "keys")  # a swapped record: refused
    assert other.key_id == "hub-x25519-v1"
    swapped = export_hub_public_key(tmp / "other_hub" / "keys", tmp / "swapped.json")
    assert keys("import-hub-key", *sch, "--file", str(swapped)) == 2
    assert "already imported" in capsys.readouterr().err
    assert run(tmp, mp, ext) == 0
    (batch,) = landed_batches(tmp / "landing", "SCH")
    opened = open_batch(batch, tmp / "opened" / "SCH" / batch.name, tmp / "hub" / "keys")
    verified = verify_batch(opened, load_public_keys(hub))
    assert verified.rows == {"read": 2, "accepted": 2, "quarantined": 0}
    assert (verified.link_key_version, verified.ref_key_version) == (1, 1)


def test_wrong_passphrase_is_refused_and_imports_nothing(world, monkeypatch, capsys) -> None:
    tmp, _, _ = world
    lead = ["--agency-dir", str(tmp / "CSC"), "--agency", "CSC"]
    keys("init", *lead, "--partnership-lead")
    wrapped = tmp / "link.wrapped.json"
    keys("export-link-key", *lead, "--file", str(wrapped), "--passphrase-env", "JU_PASS")
    monkeypatch.setenv("JU_PASS", "not the passphrase at all")
    assert (
        keys(
            "import-link-key",
            "--agency-dir",
            str(tmp / "SCH"),
            "--agency",
            "SCH",
            "--file",
            str(wrapped),
            "--passphrase-env",
            "JU_PASS",
        )
        == 2
    )
    assert "wrong passphrase" in capsys.readouterr().err
    assert KeyStore(tmp / "SCH" / "keys", "SCH").versions("link") == []


def test_rotation_and_reidentification(world, capsys) -> None:
    tmp, mp, ext = world
    from synthetic_data.parties import provision_partnership

    # Layout of provision_partnership: run/agency/<CODE>/keys, run/hub/public_keys.
    run_dir = tmp / "run"
    provision_partnership(run_dir, ["SCH", "GP"], passphrase=PASS)
    adir = run_dir / "agency" / "SCH"
    sch = ["--agency-dir", str(adir), "--agency", "SCH"]
    with pytest.raises(SystemExit, match="partnership lead"):
        keys("rotate", *sch, "--kind", "link")
    assert keys("rotate", *sch, "--kind", "signing") == 0
    assert keys("show-public", *sch, "--out", str(run_dir / "hub" / "public_keys")) == 0
    assert (
        main(
            [
                "run",
                str(ext),
                "--mapping",
                str(mp),
                "--agency-dir",
                str(adir),
                "--landing",
                str(run_dir / "landing"),
            ]
        )
        == 0
    )
    (landed,) = landed_batches(run_dir / "landing", "SCH")
    batch = open_batch(landed, tmp / "opened" / "SCH" / landed.name, run_dir / "hub" / "keys")
    manifest = verify_batch(batch, load_public_keys(run_dir / "hub" / "public_keys"))
    assert manifest.signing_key_id == "SCH-ed25519-v2"

    refs = pq.read_table(batch / "identifiers.parquet", columns=["record_ref"]).column(0)
    capsys.readouterr()
    args = [
        "reidentify",
        "--agency-dir",
        str(adir),
        "--extract",
        str(ext),
        "--mapping",
        str(mp),
        "--ref",
        refs[1].as_py(),
        "--protocol",
        "mash",
        "--user",
        "sw042",
        "--reason",
        "strategy discussion",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Okonkwo" in out and "Smith" not in out
    log = adir / "audit.log"
    assert verify_audit_chain(log) == 1
    # The local id as a token of its own: "R2" inside a base64url ref (1 in ~100 runs) is not it.
    assert "Okonkwo" not in log.read_text()
    assert not re.search(r"(?<![A-Za-z0-9_-])R2(?![A-Za-z0-9_-])", log.read_text())

    # A GP ref sent to the school bridge is refused, and the refusal is audited too.
    from ig_bridge.keys import encrypt_record_ref

    gp_ref = encrypt_record_ref(KeyStore(run_dir / "agency" / "GP" / "keys", "GP").ref_key(), "R2")
    args[args.index("--ref") + 1] = gp_ref
    assert main(args) == 2
    assert "belongs to another agency" in capsys.readouterr().err
    assert verify_audit_chain(log) == 2

    # One base64url ref in 64 starts with '-': it is still read as the --ref value, not a flag.
    gp_key = KeyStore(run_dir / "agency" / "GP" / "keys", "GP").ref_key()
    dash_ref = next(
        ref for i in range(5000) if (ref := encrypt_record_ref(gp_key, f"R{i}")).startswith("-")
    )
    args[args.index("--ref") + 1] = dash_ref
    assert main(args) == 2
    assert "belongs to another agency" in capsys.readouterr().err
    assert verify_audit_chain(log) == 3


def test_summary_prints_whole_paths_outside_a_terminal(world, capsys, monkeypatch) -> None:
    """Airflow logs and CI are not terminals: rich would cut the landed path to '…' at 80
    columns. Run a real batch deep in a long folder and read the summary as a log would."""
    tmp, mp, ext = world
    monkeypatch.delenv("COLUMNS", raising=False)
    deep = tmp / ("a-long-partnership-folder-name-" * 4) / "bridge"
    lead = ["--agency-dir", str(deep / "SCH"), "--agency", "SCH"]
    assert keys("init", *lead, "--partnership-lead") == 0
    create_hub_sealing_key(tmp / "hub" / "keys")  # the hub's public record, imported
    record = export_hub_public_key(tmp / "hub" / "keys", tmp / "hub_sealing_key.v1.json")
    assert keys("import-hub-key", *lead, "--file", str(record)) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "run",
                str(ext),
                "--mapping",
                str(mp),
                "--agency-dir",
                str(deep / "SCH"),
                "--landing",
                str(deep / "landing"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "…" not in out
    (batch,) = landed_batches(deep / "landing", "SCH")
    landed = next(ln for ln in out.splitlines() if "landed at" in ln)
    assert len(str(batch)) > 120 and str(batch) in landed  # whole, on one line
    report = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith("report"))
    assert str(deep / "SCH") in report
