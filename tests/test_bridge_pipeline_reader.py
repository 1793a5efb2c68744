"""Reader accounting on hypothesis-generated malformed CSV: rows read = accepted + quarantined."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ig_bridge.reader import iter_chunks
from schemas.mapping import SourceSpec

GOOD = st.tuples(st.integers(0, 10**6), st.text("abcXYZ é", min_size=0, max_size=6)).map(
    lambda t: f"{t[0]},{t[1]},ok\n".encode()
)
BAD = st.sampled_from(
    [
        b"\n",  # empty line
        b"1,two\n",  # too few fields
        b"1,two,three,four\n",  # too many fields
        b"9,caf\xe9,ok\n",  # cp1252 byte in a utf-8 file
        b'7,"bad"quote,ok\n',  # text after a closing quote
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(GOOD, BAD), min_size=0, max_size=40))
def test_rows_read_equals_accepted_plus_quarantined(lines: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.csv"
        p.write_bytes(b"id,name,note\n" + b"".join(lines))
        chunks = list(iter_chunks(p, SourceSpec(format="csv")))
        accepted = sum(len(c.frame) for c in chunks)
        quarantined = sum(len(c.malformed) for c in chunks)
        # no quoted newlines here, so every physical data line is exactly one record
        assert accepted + quarantined == len(lines)
        bad_lines = {
            i + 2
            for i, line in enumerate(lines)
            if line in (b"\n", b"1,two\n", b"1,two,three,four\n", b"9,caf\xe9,ok\n")
        }
        assert {m.line for c in chunks for m in c.malformed} == bad_lines
        for c in chunks:
            for m in c.malformed:
                assert "caf" not in m.reason
