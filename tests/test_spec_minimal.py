"""Data minimisation of the encoding spec: every encoding a bridge sends is one the hub reads.
An encoding the hub never compares is attack surface with nothing to show for it (spec v3's
bf_name: unread, and the graph matching attack re-identified 2.08% of its records at 30,000
people). Tokens and Bloom filters are read by name; blocking keys all become blocking rules."""

from __future__ import annotations

import re
from pathlib import Path

from ig_bridge.encoding import load_encoding_spec
from linkage.blocking_rules import NOT_BLOCKING_KEYS
from linkage.comparisons import BLOOM_COLUMNS

REPO = Path(__file__).resolve().parents[1]
HUB = ("linkage", "governance", "workspace")


def _hub_names() -> set[str]:
    """Every quoted tok_/bf_/blk_/flag_ name in the hub's code."""
    names: set[str] = set()
    for part in HUB:
        for path in (REPO / part).rglob("*.py"):
            names |= set(
                re.findall(r"[\"']((?:tok|bf|blk|flag)_[a-z0-9_]+)[\"']", path.read_text())
            )
    return names


def test_every_token_and_bloom_filter_sent_is_read_by_the_hub() -> None:
    spec = load_encoding_spec()
    read = _hub_names()
    unread = [c for c in spec["tokens"]["columns"] if c not in read]
    assert not unread, f"tokens the bridges send but the hub never reads: {unread}"
    flags = [c for c in (spec.get("flags") or {}).get("columns", {}) if c not in read]
    assert not flags, f"flags the bridges send but the hub never reads: {flags}"
    blooms = set(spec["bloom"]["columns"])
    assert blooms == set(BLOOM_COLUMNS), (
        f"Bloom filters sent but never compared: {sorted(blooms - set(BLOOM_COLUMNS))}; "
        f"compared but not sent: {sorted(set(BLOOM_COLUMNS) - blooms)}"
    )


def test_every_blocking_key_is_a_blocking_rule_or_read_by_name() -> None:
    """Blocking keys become prediction rules generically (linkage.comparisons); one kept out
    of blocking (NOT_BLOCKING_KEYS) must be read by name elsewhere (e.g. the family rules)."""
    spec = load_encoding_spec()
    assert all(c.startswith("blk_") for c in spec["blocking"]["columns"])
    for c in NOT_BLOCKING_KEYS & set(spec["blocking"]["columns"]):
        mentions = sum(
            len(re.findall(rf"[\"']{c}[\"']", p.read_text()))
            for part in HUB
            for p in (REPO / part).rglob("*.py")
        )
        assert mentions >= 2, f"{c} is kept out of blocking and read nowhere else"
