"""Issue #15 item 6: a partner agency holds the shared linkage key; it must not read another
agency's landed batches.

Acting as GP, with GP's own key folder (linkage key, record-ref key, signing key, the hub's
public sealing key) and the landing zone in reach, against every other agency's real landed
batch: open the Parquet files, parse the manifest, try every key GP holds as the hub's private
key, and run the dictionary attack of the issue (HMAC tokens of every date of birth from 1920
and of the public surname list, under the shared linkage key) against every byte it can read.
Nothing parses, nothing opens, 0 records recovered. The same attack on the hub's opened copy
recovers almost every date of birth: the attack is real, and only the sealing stops it.
"""

from __future__ import annotations

import base64
import json
import re
import stat
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from nacl.public import PrivateKey
from sealed_batches import open_batch

from ig_bridge.encoding import Encoder
from ig_bridge.keys import KeyStore
from ig_bridge.normalise import normalise_identifiers
from ig_bridge.sealing import HubSealingKey, SealError, unseal_stream
from synthetic_data.names import SURNAMES

ATTACKER = "GP"
HEX_TOKEN = re.compile(rb"[0-9a-f]{32}")


def _dictionary(link) -> tuple[dict[str, str], dict[str, str]]:  # noqa: ANN001 - LinkKey
    """token -> value for every DOB 1920-01-01..2026-12-31 and every listed surname in every
    birth year, computed with the bridge's own normaliser and encoder under the shared key
    (what GP can run)."""
    days = [
        date(1920, 1, 1) + timedelta(d)
        for d in range((date(2026, 12, 31) - date(1920, 1, 1)).days + 1)
    ]
    # Spec v3 salts family-name tokens with the birth year: every surname in every year.
    pairs = [(f"{y}-01-01", s) for y in range(1920, 2027) for s in SURNAMES]
    n = max(len(days), len(pairs))
    raw = pd.DataFrame(
        {
            "date_of_birth": [d.isoformat() for d in days] + [None] * (n - len(days)),
            "family_name": [None] * n,
        }
    )
    fam_raw = pd.DataFrame(
        {"date_of_birth": [d for d, _ in pairs], "family_name": [s for _, s in pairs]}
    )
    raw = pd.concat([raw, fam_raw], ignore_index=True)
    norm = normalise_identifiers(raw, ["%Y-%m-%d"]).frame
    enc = Encoder(link).encode(norm)
    dob = {t: v for t, v in zip(enc["tok_dob"], raw["date_of_birth"], strict=True) if t is not None}
    fam = {
        t: v
        for t, v in zip(enc["tok_family_name"], raw["family_name"], strict=True)
        if t is not None
    }
    return dob, fam


def _secrets_held(keys_dir: Path) -> list[bytes]:
    """Every 32-byte secret in GP's key files (and the hub's public key), to try as the hub's
    private key."""
    out = []
    for f in sorted(keys_dir.glob("*.json")):
        doc = json.loads(f.read_text("utf-8"))
        for field in ("secret", "public_key"):
            if field in doc:
                raw = base64.b64decode(doc[field])
                out.extend(raw[i : i + 32] for i in range(0, len(raw) - 31, 32))
    return out


def test_partner_agency_cannot_read_or_detokenise_another_agencys_batch(
    orchestrated_run: Path, copy_run, tmp_path: Path
) -> None:
    run = copy_run(orchestrated_run, tmp_path / "run")
    gp_keys = run / "agency" / ATTACKER / "keys"
    link = KeyStore(gp_keys, ATTACKER).link_key()  # the shared linkage key
    dob_dict, fam_dict = _dictionary(link)
    assert len(dob_dict) > 38_000 and len(fam_dict) > 50
    held = _secrets_held(gp_keys)
    assert len(held) >= 4

    victims = [d for d in sorted((run / "landing").iterdir()) if d.name != ATTACKER]
    assert len(victims) >= 6
    recovered = files = 0
    control_records = control_dob = 0
    for drop in victims:
        # The drop area is write + search only for others (no listing): mode 1733.
        assert stat.S_IMODE(drop.stat().st_mode) == 0o1733
        (batch,) = list(drop.iterdir())
        for f in sorted(batch.iterdir()):
            files += 1
            data = f.read_bytes()
            with pytest.raises(Exception):  # noqa: B017 - not Parquet
                pq.read_table(f)
            with pytest.raises(ValueError):  # not JSON either (UnicodeDecodeError or JSON)
                json.loads(data)
            # Every key GP holds, tried as the hub's private key: the file key never opens.
            for secret in held:
                fake = HubSealingKey(1, PrivateKey(secret))
                with pytest.raises(SealError), f.open("rb") as src:
                    unseal_stream(
                        src,
                        _Sink(),
                        {fake.key_id: fake},
                        agency=drop.name,
                        batch_id=batch.name,
                        file_name=f.name.removesuffix(".sealed"),
                    )
            # The dictionary attack against whatever bytes are there.
            found = {m.group(0).decode() for m in HEX_TOKEN.finditer(data)}
            recovered += len(found & dob_dict.keys()) + len(found & fam_dict.keys())
            assert not re.search(rb"(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]", data)  # no dates
            assert b"record_ref" not in data and b"PAR1" not in data  # no column names, no
            # Parquet magic
        # Control: the hub's own opened copy gives the same attack almost every DOB.
        opened = open_batch(
            batch, tmp_path / "hub_view" / drop.name / batch.name, run / "hub" / "keys"
        )
        ids = pq.read_table(
            opened / "identifiers.parquet", columns=["tok_dob", "tok_family_name"]
        ).to_pydict()
        control_records += len(ids["tok_dob"])
        control_dob += sum(t in dob_dict for t in ids["tok_dob"])
    assert files == 5 * len(victims)  # manifest, identifiers, related, payload, present
    assert recovered == 0
    assert control_dob >= 0.9 * control_records, (control_dob, control_records)
    print(
        f"partner attack: {files} sealed files of {len(victims)} agencies, 0 tokens recovered;"
        f" on the hub's opened copy the same attack recovers {control_dob:,} of "
        f"{control_records:,} DOBs"
    )


class _Sink:
    def write(self, b: bytes) -> int:
        return len(b)
