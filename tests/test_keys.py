"""Keys: HKDF domain separation, key files, passphrase wrap, AES-SIV record refs."""

import json
import os
import stat

import pytest

from ig_bridge.keys import (
    KeyStore,
    LinkKey,
    LoosePermissionsError,
    RecordRefError,
    WrongPassphraseError,
    decrypt_record_ref,
    derive_subkey,
    encrypt_record_refs,
    generate_link_key,
    generate_ref_key,
    generate_signing_key,
    load_key,
    save_key,
    unwrap_link_key,
    wrap_link_key,
)


def test_hkdf_domain_separation_by_field_and_version():
    k1 = generate_link_key(1)
    k2 = LinkKey(2, k1.secret)
    assert derive_subkey(k1, "given_name") != derive_subkey(k1, "family_name")
    assert derive_subkey(k1, "given_name") != derive_subkey(k2, "given_name")
    assert derive_subkey(k1, "given_name") == derive_subkey(LinkKey(1, k1.secret), "given_name")
    assert len(derive_subkey(k1, "dob")) == 32
    with pytest.raises(ValueError):
        derive_subkey(k1, "given_name/v2")  # '/' would make info strings ambiguous


def test_hkdf_matches_rfc5869_construction():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    k = generate_link_key(3)
    expected = HKDF(hashes.SHA256(), 32, None, b"joinedup/postcode/v3").derive(k.secret)
    assert k.subkey("postcode") == expected


def test_record_ref_roundtrip_and_determinism():
    key = generate_ref_key("SCH")
    ref = key.encrypt("PUP-000123")
    assert ref == key.encrypt("PUP-000123")
    assert "=" not in ref and "+" not in ref and "/" not in ref
    assert key.decrypt(ref) == "PUP-000123"
    assert encrypt_record_refs(key, ["PUP-000123", "x"])[0] == ref
    assert key.encrypt("PUP-000124") != ref


def test_record_ref_other_agency_and_wrong_key_fail_without_plaintext():
    sch, gp = generate_ref_key("SCH"), generate_ref_key("GP")
    ref = sch.encrypt("ID-77")
    assert gp.encrypt("ID-77") != ref
    with pytest.raises(RecordRefError) as err:
        decrypt_record_ref(ref, gp)
    assert "ID-77" not in str(err.value)
    # Same key bytes, different agency or version: the associated data differs, so it fails.
    from ig_bridge.keys import RefKey

    with pytest.raises(RecordRefError):
        RefKey("GP", 1, sch.secret).decrypt(ref)
    with pytest.raises(RecordRefError):
        RefKey("SCH", 2, sch.secret).decrypt(ref)
    with pytest.raises(RecordRefError):
        sch.decrypt(ref[:-2] + ("A" if ref[-2] != "A" else "B") + ref[-1])
    with pytest.raises(RecordRefError):
        sch.decrypt("not*base64")


def test_decrypt_tries_every_version_after_rotation():
    v1, v2 = generate_ref_key("SCH", 1), generate_ref_key("SCH", 2)
    old = v1.encrypt("R1")
    assert decrypt_record_ref(old, [v2, v1]) == "R1"


def test_repr_redacts_secrets():
    for key in (generate_link_key(), generate_ref_key("SCH"), generate_signing_key("SCH")):
        text = repr(key) + str(key)
        assert "redacted" in text
        secret = getattr(key, "secret", None)
        if secret:
            assert secret.hex() not in text and str(secret) not in text


def test_key_files_are_0600_and_loose_files_refused(tmp_path):
    old_umask = os.umask(0)  # even a permissive umask must not loosen the file
    try:
        path = save_key(generate_link_key(), tmp_path / "k.json")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(load_key(path), LinkKey)
    with pytest.raises(FileExistsError):
        save_key(generate_link_key(), path)
    path.chmod(0o640)
    with pytest.raises(LoosePermissionsError, match="chmod 600"):
        load_key(path)
    path.chmod(0o604)
    with pytest.raises(LoosePermissionsError):
        load_key(path)


def test_all_key_kinds_roundtrip_through_files(tmp_path):
    sig = generate_signing_key("GP", 2)
    loaded = load_key(save_key(sig, tmp_path / "s.json"))
    assert loaded.key_id == "GP-ed25519-v2"
    assert loaded.public_bytes() == sig.public_bytes()
    ref = generate_ref_key("GP")
    assert load_key(save_key(ref, tmp_path / "r.json")).decrypt(ref.encrypt("A")) == "A"


def test_passphrase_wrap_unwrap_and_wrong_passphrase():
    key = generate_link_key(4)
    blob = wrap_link_key(key, "correct horse battery staple", scrypt_n=2**14)
    assert key.secret.hex() not in blob.decode()
    back = unwrap_link_key(blob, "correct horse battery staple")
    assert back.secret == key.secret and back.version == 4
    with pytest.raises(WrongPassphraseError):
        unwrap_link_key(blob, "correct horse battery stapler")
    doc = json.loads(blob)
    doc["version"] = 5  # header is bound as AAD: relabelling the version is detected
    with pytest.raises(WrongPassphraseError):
        unwrap_link_key(json.dumps(doc).encode(), "correct horse battery staple")
    with pytest.raises(ValueError):
        wrap_link_key(key, "short")


def test_keystore_rotation_keeps_old_versions(tmp_path):
    store = KeyStore(tmp_path / "keys", "SCH")
    store.ensure()
    assert store.link_key().version == 1
    old_ref = store.ref_key()
    ref = old_ref.encrypt("LOCAL-1")
    store.create_link_key()
    store.create_ref_key()
    assert store.link_key().version == 2 and store.link_key(1).version == 1
    assert store.link_key(1).secret != store.link_key(2).secret
    assert decrypt_record_ref(ref, store.ref_keys()) == "LOCAL-1"
    for p in (tmp_path / "keys").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    # Another bridge of the partnership imports the same K_link from a wrapped export.
    other = KeyStore(tmp_path / "other", "GP")
    blob = wrap_link_key(store.link_key(), "partnership passphrase 1", scrypt_n=2**14)
    assert (
        other.import_link_key(blob, "partnership passphrase 1").key_check
        == store.link_key().key_check
    )
    pub = store.export_public_key(tmp_path / "hub_pub")
    assert json.loads(pub.read_text())["key_id"] == "SCH-ed25519-v1"
