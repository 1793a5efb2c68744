"""The agency's own list of agreed protocols (`joinedup-bridge protocols agree`): what the
re-identification service checks every hub request against."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from governance.policy import load_protocols
from ig_bridge.cli import main
from ig_bridge.reid_controls import (
    AGREED_FILE,
    AgreedProtocols,
    AgreementError,
    SlidingWindowLimiter,
)

PROTOCOLS = Path(__file__).resolve().parent.parent / "schemas" / "protocols"


def test_agree_through_the_cli_matches_what_the_hub_loads(tmp_path: Path) -> None:
    adir = tmp_path / "agency" / "GP"
    args = [
        "protocols",
        "agree",
        "--agency-dir",
        str(adir),
        "--agency",
        "GP",
        "--agreed-by",
        "ig.lead.gp",
        "--protocol",
        str(PROTOCOLS / "s47_child_protection_enquiry.yaml"),
        "--protocol",
        str(PROTOCOLS / "involvement_index.yaml"),
    ]
    assert main(args) == 0
    path = adir / AGREED_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    agreed = AgreedProtocols.load(adir, "GP")
    hub = load_protocols()
    s47, idx = hub["s47_child_protection_enquiry"], hub["involvement_index"]
    assert agreed.check(s47.id, s47.version, s47.document_sha256) is None
    assert (
        agreed.check(idx.id, idx.version, idx.document_sha256) == "identity_not_allowed_by_protocol"
    )
    assert agreed.check("mash_information_sharing", 1, "0" * 64) == "protocol_not_agreed"
    assert agreed.check(s47.id, s47.version, "f" * 64) == "protocol_version_not_agreed"
    # GP is not a party to MASH: the IG lead cannot agree it for GP
    args[-1] = str(PROTOCOLS / "mash_information_sharing.yaml")
    assert main(args) == 2
    assert set(AgreedProtocols.load(adir, "GP").protocols) == {s47.id, idx.id}


def test_a_changed_protocol_must_be_agreed_again(tmp_path: Path) -> None:
    """The hub edits s47 (say, widening it); until the agency agrees the new text, the hub's
    requests under it name a hash the agency never agreed."""
    adir = tmp_path / "GP"
    doc = tmp_path / "s47_child_protection_enquiry.yaml"
    doc.write_bytes((PROTOCOLS / doc.name).read_bytes())
    assert (
        main(
            [
                "protocols",
                "agree",
                "--agency-dir",
                str(adir),
                "--agency",
                "GP",
                "--agreed-by",
                "ig",
                "--protocol",
                str(doc),
            ]
        )
        == 0
    )
    before = AgreedProtocols.load(adir, "GP")
    doc.write_text(
        re.sub(
            r"\nversion: (\d+)\n",
            lambda m: f"\nversion: {int(m[1]) + 1}\n",
            doc.read_text(),
            count=1,
        )
    )
    changed = load_protocols_from(doc)
    assert (
        before.check(changed.id, changed.version, changed.document_sha256)
        == "protocol_version_not_agreed"
    )
    assert (
        main(
            [
                "protocols",
                "agree",
                "--agency-dir",
                str(adir),
                "--agency",
                "GP",
                "--agreed-by",
                "ig",
                "--protocol",
                str(doc),
            ]
        )
        == 0
    )
    after = AgreedProtocols.load(adir, "GP")
    assert after.check(changed.id, changed.version, changed.document_sha256) is None


def load_protocols_from(path: Path):  # noqa: ANN201
    from governance.policy import load_protocol

    return load_protocol(path)


def test_agreed_file_others_can_write_is_refused(tmp_path: Path) -> None:
    adir = tmp_path / "GP"
    assert (
        main(
            [
                "protocols",
                "agree",
                "--agency-dir",
                str(adir),
                "--agency",
                "GP",
                "--agreed-by",
                "ig",
                "--protocol",
                str(PROTOCOLS / "s47_child_protection_enquiry.yaml"),
            ]
        )
        == 0
    )
    (adir / AGREED_FILE).chmod(0o666)
    with pytest.raises(AgreementError, match="writable"):
        AgreedProtocols.load(adir, "GP")
    (adir / AGREED_FILE).chmod(0o600)
    with pytest.raises(AgreementError, match="agency SCH"):
        AgreedProtocols.load(adir, "SCH")  # another agency's file is not this agency's list
    assert (
        AgreedProtocols.load(tmp_path / "nothing", "GP").check(
            "s47_child_protection_enquiry", 1, "0" * 64
        )
        == "protocol_not_agreed"
    )


def test_sliding_window_limits() -> None:
    lim = SlidingWindowLimiter(per_user=2, total=3, window=60)
    assert [lim.admit("a", now=t) for t in (0, 1, 2)] == [None, None, "rate_limited_user"]
    assert lim.admit("b", now=3) is None
    assert lim.admit("c", now=4) == "rate_limited_total"
    assert lim.admit("a", now=60.5) is None  # a's first request left the window
    assert lim.admit("a", now=60.6) == "rate_limited_total"  # 1, 3 and 60.5 in the window


def _append_many(args: tuple[str, int]) -> None:
    from ig_bridge.reid_controls import append_audit

    path, who = args
    for i in range(50):
        append_audit(path, {"outcome": "refused", "detail": "test", "writer": who, "i": i})


def test_concurrent_writers_keep_one_chain(tmp_path: Path) -> None:
    """The service and the CLI (or two service processes) append to the same log: the file
    lock keeps one intact chain."""
    import multiprocessing

    from ig_bridge.reidentify import verify_audit_chain

    log = tmp_path / "audit.log"
    # spawn, not fork: a forked child of a test worker that has run other tests can inherit a
    # lock held by another thread and hang (seen under pytest-xdist).
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(str(log), w) for w in range(4)])
    assert verify_audit_chain(log) == 200
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    log.chmod(0o644)  # readable by others: refused before anything is written
    from ig_bridge.reid_controls import append_audit

    with pytest.raises(PermissionError):
        append_audit(log, {"outcome": "x"})
    assert verify_audit_chain(log) == 200
