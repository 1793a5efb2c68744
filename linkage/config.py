"""Where the hub keeps things, and what it expects of the partnership's encoding.

The embedded default keeps everything under one run folder (docs/contracts.md); production points
the same paths at mounted volumes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMAS_DIR = Path(str(resources.files("schemas")))
MAPPINGS_DIR_ENV = "JOINEDUP_MAPPINGS_DIR"


def default_mappings_dir() -> Path:
    """The onboarded agencies' mappings: `JOINEDUP_MAPPINGS_DIR`, else the packaged
    `schemas/agencies`. Every hub path that reads mappings starts here, so a partnership's own
    folder (a new agency's code) is honoured outside the DAG too."""
    env = os.environ.get(MAPPINGS_DIR_ENV)
    return Path(env).resolve() if env else SCHEMAS_DIR / "agencies"


#: Hub files are the hub's alone: 0600 files in 0700 folders (the warehouse holds every token).
HUB_UMASK = 0o077
HUB_DIR_MODE = 0o700
HUB_FILE_MODE = 0o600


@contextmanager
def private_umask() -> Iterator[None]:
    """Files and folders created in the block (DuckDB's database and WAL, marts, reports,
    refused and held batches) are owner-only, then the umask goes back."""
    before = os.umask(HUB_UMASK)
    try:
        yield
    finally:
        os.umask(before)


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) and make it owner-only, also when it already existed."""
    path.mkdir(parents=True, exist_ok=True, mode=HUB_DIR_MODE)
    if not path.is_symlink():
        path.chmod(HUB_DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make an existing hub file owner-only (one created before this release, or by a library
    that ignores the umask)."""
    if path.exists() and not path.is_symlink():
        path.chmod(HUB_FILE_MODE)
    return path


@dataclass(frozen=True)
class HubPaths:
    """The hub's folders. `landing` is shared with the bridges; everything else is hub-only."""

    hub: Path
    landing: Path
    mappings: Path = field(default_factory=default_mappings_dir)

    @classmethod
    def for_run(cls, run_dir: Path | str, mappings: Path | str | None = None) -> HubPaths:
        run_dir = Path(run_dir)
        return cls(
            hub=run_dir / "hub",
            landing=run_dir / "landing",
            mappings=Path(mappings) if mappings is not None else default_mappings_dir(),
        )

    @property
    def warehouse(self) -> Path:
        return self.hub / "warehouse.duckdb"

    @property
    def refused(self) -> Path:
        return self.hub / "refused"

    @property
    def ingested(self) -> Path:
        return self.hub / "ingested"

    @property
    def public_keys(self) -> Path:
        return self.hub / "public_keys"

    @property
    def keys(self) -> Path:
        """The hub's own private keys (sealing key pair, request-signing key): 0700."""
        return self.hub / "keys"

    @property
    def incoming(self) -> Path:
        """Hub-private custody area: landed batches are unsealed here (dirs 0700, files 0600)
        and verified and loaded from here, never from the landing zone."""
        return self.hub / "incoming"

    @property
    def reports(self) -> Path:
        return self.hub / "reports"

    @property
    def marts(self) -> Path:
        return self.hub / "marts"

    @property
    def held(self) -> Path:
        """Verified batches waiting for an earlier sequence number (linkage.sequence)."""
        return self.hub / "held"

    def ensure(self) -> HubPaths:
        self.landing.mkdir(parents=True, exist_ok=True)  # shared with the bridges
        for p in (
            self.hub,
            self.refused,
            self.ingested,
            self.held,
            self.public_keys,
            self.reports,
            self.marts,
        ):
            private_dir(p)
        private_file(self.warehouse)
        for p in (self.keys, self.incoming):
            private_dir(p)
        return self


@dataclass(frozen=True)
class EncodingContract:
    """The column contract of identifiers.parquet / related.parquet, read from the partnership
    encoding spec. The hub reads the YAML itself: it must not import the bridge's encoder."""

    spec: dict[str, Any]

    @classmethod
    def load(cls, path: Path | str | None = None) -> EncodingContract:
        # The bridges' JOINEDUP_ENCODING_SPEC (ig_bridge.encoding.SPEC_ENV): the same file.
        path = path or os.environ.get("JOINEDUP_ENCODING_SPEC") or None
        if path is None:
            text = resources.files("schemas").joinpath("encoding_spec.yaml").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls(yaml.safe_load(text))

    @property
    def version(self) -> int:
        return int(self.spec["encoding_spec_version"])

    def _cols(self, section: str) -> list[str]:
        return list(((self.spec.get(section) or {}).get("columns") or {}).keys())

    @cached_property
    def token_columns(self) -> list[str]:
        return self._cols("tokens")

    @cached_property
    def blocking_columns(self) -> list[str]:
        return self._cols("blocking")

    @cached_property
    def bloom_columns(self) -> list[str]:
        return self._cols("bloom")

    @cached_property
    def flag_columns(self) -> list[str]:
        """Booleans (`flag_*`): data-quality facts, not pseudonyms (ig_bridge.encoding)."""
        return self._cols("flags")

    @property
    def encoded_columns(self) -> list[str]:
        return [
            *self.token_columns,
            *self.blocking_columns,
            *self.bloom_columns,
            *self.flag_columns,
        ]

    @property
    def identifiers_columns(self) -> frozenset[str]:
        return frozenset({"record_ref", "agency", "batch_id", *self.encoded_columns})

    @property
    def related_columns(self) -> frozenset[str]:
        return self.identifiers_columns | {"slot", "relationship"}
