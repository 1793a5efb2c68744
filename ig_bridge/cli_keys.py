"""`joinedup-bridge keys`: create, import, export, show and rotate the agency's keys.

Start-up stays light (see ig_bridge.cli): key code is imported inside the command."""

from __future__ import annotations

import argparse
import getpass
import os

from ig_bridge.cli_console import _console, console


def _passphrase(a: argparse.Namespace, confirm: bool = False) -> str:
    if a.passphrase_env:
        value = os.environ.get(a.passphrase_env)
        if not value:
            raise SystemExit(f"environment variable {a.passphrase_env} is not set")
        return value
    value = getpass.getpass("passphrase: ")
    if confirm and getpass.getpass("again: ") != value:
        raise SystemExit("passphrases differ")
    return value


def _keys(a: argparse.Namespace) -> int:
    from ig_bridge.keys import KeyFileError, KeyStore, WrongPassphraseError, describe_public_key

    store = KeyStore(a.agency_dir / "keys", a.agency)
    out = _console()
    try:
        if a.action == "init":
            made = []
            if a.partnership_lead and not store.versions("link"):
                made.append(f"partnership link key v{store.create_link_key().version}")
            if not store.versions("ref"):
                made.append(f"record-ref key v{store.create_ref_key().version}")
            if not store.versions("signing"):
                made.append(f"signing key {store.create_signing_key().key_id}")
            out.print(
                f"[green]created[/green] {', '.join(made)}"
                if made
                else "keys already present; nothing created"
            )
            if not store.versions("link"):
                console.print(
                    "[yellow]no partnership link key yet[/yellow]: import the one the "
                    "partnership lead sends you with `joinedup-bridge keys "
                    "import-link-key`"
                )
            out.print(describe_public_key(store.signing_key()))
        elif a.action == "export-link-key":
            if a.file is None:
                raise SystemExit("export-link-key needs --file")
            from ig_bridge.keys import wrap_link_key

            key = store.link_key()
            blob = wrap_link_key(key, _passphrase(a, confirm=True))
            fd = os.open(a.file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            out.print(
                f"link key v{key.version} (check {key.key_check}) wrapped to {a.file}; "
                "send the file and, separately, the passphrase"
            )
        elif a.action == "import-link-key":
            if a.file is None:
                raise SystemExit("import-link-key needs --file")
            key = store.import_link_key(a.file.read_bytes(), _passphrase(a))
            out.print(
                f"[green]imported[/green] partnership link key v{key.version}, check "
                f"{key.key_check} (confirm it with the partnership lead)"
            )
        elif a.action == "import-hub-key":
            if a.file is None:
                raise SystemExit("import-hub-key needs --file")
            from ig_bridge.sealing import import_hub_public_key

            hub = import_hub_public_key(store.directory, a.file.read_bytes())
            out.print(
                f"[green]imported[/green] hub sealing key {hub.key_id}, fingerprint "
                f"{hub.fingerprint} (confirm it with the hub operator); batches now land "
                "sealed to it"
            )
        elif a.action == "show-public":
            out.print(describe_public_key(store.signing_key()))
            if a.out is not None:
                for v in store.versions("signing"):
                    out.print(f"written {store.export_public_key(a.out, v)}")
        elif a.action == "rotate":
            if a.kind == "link" and not a.partnership_lead:
                raise SystemExit(
                    "the link key is the partnership's: only the partnership lead "
                    "rotates it (--partnership-lead), then exports it to every "
                    "bridge"
                )
            new = {
                "link": store.create_link_key,
                "ref": store.create_ref_key,
                "signing": store.create_signing_key,
            }[a.kind]()
            out.print(f"[green]rotated[/green] {a.kind} key to v{new.version}")
            if a.kind == "signing":
                out.print(
                    "send the new public key to the hub: "
                    + describe_public_key(store.signing_key())
                )
    except WrongPassphraseError as exc:
        console.print(f"[red]refused[/red] {exc}")
        return 2
    except (KeyFileError, FileExistsError, FileNotFoundError) as exc:
        console.print(f"[red]error[/red] {exc}")
        return 2
    return 0
