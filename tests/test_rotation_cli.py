"""`joinedup-bridge rotation ref|link` on a tiny real bridge: signed re-keying batch the hub can
verify, refusal of a foreign ref, and a snapshot re-tokenised under link key v2."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from sealed_batches import open_batch

from ig_bridge.cli import main
from ig_bridge.keys import KeyStore, decrypt_record_ref
from ig_bridge.landing import landed_batches
from ig_bridge.manifest import load_public_keys, verify_batch
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
    ],
}
EXTRACT = (
    "Ref,Forename,Surname,DOB\n"
    "R1,Amelia,Smith,04/03/2012\n"
    "R2,Benedict,Okonkwo,01/12/2011\n"
    "R3,Chloe,Nguyen,29/02/2012\n"
)


@pytest.fixture
def landed(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    mp = tmp_path / "sch.yaml"
    mp.write_text(yaml.safe_dump(MAPPING))
    ext = tmp_path / "pupils.csv"
    ext.write_text(EXTRACT)
    agency = tmp_path / "SCH"
    assert (
        main(["keys", "init", "--agency-dir", str(agency), "--agency", "SCH", "--partnership-lead"])
        == 0
    )
    assert (
        main(
            [
                "keys",
                "show-public",
                "--agency-dir",
                str(agency),
                "--agency",
                "SCH",
                "--out",
                str(tmp_path / "hub"),
            ]
        )
        == 0
    )
    create_hub_sealing_key(tmp_path / "hubside" / "keys")
    record = export_hub_public_key(tmp_path / "hubside" / "keys", tmp_path / "hubside")
    assert (
        main(
            [
                "keys",
                "import-hub-key",
                "--agency-dir",
                str(agency),
                "--agency",
                "SCH",
                "--file",
                str(record),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "run",
                str(ext),
                "--mapping",
                str(mp),
                "--agency-dir",
                str(agency),
                "--landing",
                str(tmp_path / "landing"),
            ]
        )
        == 0
    )
    return tmp_path, mp, ext, agency


def _open(tmp: Path, landed: Path) -> Path:
    """The hub's view of a sealed landed batch."""
    return open_batch(
        landed, tmp / "opened" / landed.parent.name / landed.name, tmp / "hubside" / "keys"
    )


def test_rotation_ref_lands_a_verifiable_mapping(landed, capsys) -> None:
    tmp, _mp, _ext, agency = landed
    (batch,) = [_open(tmp, b) for b in landed_batches(tmp / "landing", "SCH")]
    refs = pq.read_table(batch / "identifiers.parquet").column("record_ref").to_pylist()
    refs_file = tmp / "hub_refs.txt"
    refs_file.write_text("\n".join(refs) + "\n")
    args = [
        "rotation",
        "ref",
        "--agency-dir",
        str(agency),
        "--agency",
        "SCH",
        "--refs",
        str(refs_file),
        "--rekey-landing",
        str(tmp / "rekey"),
    ]

    assert main(args) == 2  # no newer ref key yet: nothing to map to
    assert "start the rotation" in " ".join(capsys.readouterr().err.split())
    assert main([*args, "--new-version"]) == 0
    assert "v[1] -> v2" in " ".join(capsys.readouterr().out.split())

    (rk,) = [_open(tmp, b) for b in landed_batches(tmp / "rekey", "SCH")]
    vm = verify_batch(rk, load_public_keys(tmp / "hub"))
    assert (vm.extract_kind, vm.ref_key_version, vm.rows["read"]) == ("rekey", 2, 3)
    assert vm.sequence == 2  # after the ordinary batch: one sequence per agency
    m = pq.read_table(rk / "rekey.parquet").to_pydict()
    store = KeyStore(agency / "keys", "SCH")
    assert sorted(decrypt_record_ref(r, store.ref_key(2)) for r in m["new_ref"]) == [
        "R1",
        "R2",
        "R3",
    ]
    assert [decrypt_record_ref(o, store.ref_key(1)) for o in m["old_ref"]] == [
        decrypt_record_ref(n, store.ref_key(2)) for n in m["new_ref"]
    ]
    assert "Amelia" not in (rk / "manifest.json").read_text()

    # A ref the agency cannot decrypt: refused with the row, nothing landed.
    refs_file.write_text(refs[0] + "\n" + refs[1][:-4] + "AAAA\n")
    assert main(args) == 2
    assert "row 2: record_ref does not decrypt" in " ".join(capsys.readouterr().err.split())
    assert len(landed_batches(tmp / "rekey", "SCH")) == 1


def test_rotation_link_retokenises_under_the_new_version(landed) -> None:
    tmp, mp, ext, agency = landed
    store = KeyStore(agency / "keys", "SCH")
    assert (
        main(
            [
                "keys",
                "rotate",
                "--kind",
                "link",
                "--partnership-lead",
                "--agency-dir",
                str(agency),
                "--agency",
                "SCH",
            ]
        )
        == 0
    )
    assert store.versions("link") == [1, 2]
    assert (
        main(
            [
                "rotation",
                "link",
                str(ext),
                "--mapping",
                str(mp),
                "--agency-dir",
                str(agency),
                "--landing",
                str(tmp / "landing"),
            ]
        )
        == 0
    )
    first, second = [_open(tmp, b) for b in landed_batches(tmp / "landing", "SCH")]
    v1 = verify_batch(first, load_public_keys(tmp / "hub"))
    v2 = verify_batch(second, load_public_keys(tmp / "hub"))
    assert (v1.link_key_version, v2.link_key_version, v2.extract_kind) == (1, 2, "snapshot")
    t1 = pq.read_table(first / "identifiers.parquet").to_pydict()
    t2 = pq.read_table(second / "identifiers.parquet").to_pydict()
    assert t1["record_ref"] == t2["record_ref"]  # refs do not depend on K_link
    assert not set(t1["tok_dob"]) & set(t2["tok_dob"])
    # an explicit older version is still possible (e.g. a late re-send before the switch)
    assert (
        main(
            [
                "rotation",
                "link",
                str(ext),
                "--mapping",
                str(mp),
                "--agency-dir",
                str(agency),
                "--landing",
                str(tmp / "landing"),
                "--link-key-version",
                "1",
            ]
        )
        == 0
    )
    third = _open(tmp, landed_batches(tmp / "landing", "SCH")[-1])
    assert (
        pq.read_table(third / "identifiers.parquet").column("tok_dob").to_pylist() == t1["tok_dob"]
    )
