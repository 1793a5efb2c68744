"""`joinedup-bridge reidentify --out`: an agency's own local ids for a file of refs, for its
quality checks. Real keys and ciphertexts; refs of another agency and damaged refs are
reported per line and left out, the rest still written (0600, never overwritten)."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ig_bridge.cli import main
from ig_bridge.keys import KeyStore, encrypt_record_refs
from ig_bridge.reidentify import verify_audit_chain

LOCAL = ["GP-0001", "GP-0002", 'GP,0003 "quoted"']  # a comma and quotes survive the CSV


@pytest.fixture
def agencies(tmp_path: Path) -> tuple[Path, list[str], str]:
    gp, other = KeyStore(tmp_path / "GP" / "keys", "GP"), KeyStore(tmp_path / "SCH" / "keys", "SCH")
    gp.create_ref_key()
    other.create_ref_key()
    mine = encrypt_record_refs(gp.ref_key(), LOCAL)
    foreign = encrypt_record_refs(other.ref_key(), ["SCH-9"])[0]
    return tmp_path, mine, foreign


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_text_refs_file_writes_local_ids_and_reports_bad_lines(agencies, capsys) -> None:
    tmp, mine, foreign = agencies
    damaged = mine[0][:-4] + ("AAAA" if not mine[0].endswith("AAAA") else "BBBB")
    refs = tmp / "refs.txt"
    refs.write_text(f"{mine[0]}\n\n{foreign}\n{mine[1]}\n{damaged}\n{mine[2]}\nnot-base64!\n")
    out = tmp / "local_ids.csv"
    rc = main(
        [
            "reidentify",
            "--agency-dir",
            str(tmp / "GP"),
            "--agency",
            "GP",
            "--refs-file",
            str(refs),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0
    assert _rows(out) == [
        {"record_ref": r, "local_id": i} for r, i in zip(mine, LOCAL, strict=True)
    ]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    # one line each for the foreign ref (line 3), the damaged one (5) and the junk (7)
    for line in (3, 5, 7):
        assert f"line {line}:" in err
    assert "line 1:" not in err and "line 4:" not in err
    assert "3 local id(s)" in err and "3 ref(s) skipped" in err
    assert not any(i in err for i in LOCAL)  # local ids go to the file only
    # recorded in the agency's own chained audit log: counts, no local ids
    assert verify_audit_chain(tmp / "GP" / "audit.log") == 1
    entry = json.loads((tmp / "GP" / "audit.log").read_text().splitlines()[0])
    assert (entry["protocol_id"], entry["written"], entry["refused"], entry["refs"]) == (
        "local_id_export",
        3,
        3,
        6,
    )
    assert not any(i in json.dumps(entry) for i in LOCAL)


def test_csv_with_agency_column_names_other_agencies_refs(agencies, capsys) -> None:
    tmp, mine, foreign = agencies
    refs = tmp / "sample.csv"
    refs.write_text(
        f"agency,record_ref\nGP,{mine[1]}\nSCH,{foreign}\nSCH,{mine[0]}\n"
    )  # labelled as another agency's: not decrypted
    out = tmp / "ids.csv"
    assert (
        main(
            [
                "reidentify",
                "--agency-dir",
                str(tmp / "GP"),
                "--agency",
                "GP",
                "--refs-file",
                str(refs),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert _rows(out) == [{"record_ref": mine[1], "local_id": LOCAL[1]}]
    assert "line 3: a record ref of agency SCH, not GP's" in err
    assert "line 4: a record ref of agency SCH, not GP's" in err


def test_parquet_refs_and_existing_output_is_never_overwritten(agencies, capsys) -> None:
    tmp, mine, _ = agencies
    refs = tmp / "refs.parquet"
    pq.write_table(pa.table({"record_ref": mine}), refs)
    out = tmp / "ids.csv"
    args = [
        "reidentify",
        "--agency-dir",
        str(tmp / "GP"),
        "--agency",
        "GP",
        "--refs-file",
        str(refs),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert [r["local_id"] for r in _rows(out)] == LOCAL
    before = out.read_bytes()
    assert main(args) == 2  # refused, the earlier export untouched
    assert "refused" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_without_out_the_identity_request_still_needs_its_context(agencies) -> None:
    tmp, mine, _ = agencies
    with pytest.raises(SystemExit, match="--extract, --mapping, --protocol, --user, --reason"):
        main(["reidentify", "--agency-dir", str(tmp / "GP"), "--ref", mine[0]])
