"""Nickname / spelling-variant lexicon for given names, loaded from schemas/nicknames.yaml.

The lexicon is data (one file shared by every bridge of a partnership) so that an IG lead can
review it and a partnership can extend it without code changes.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from ig_bridge.name_normalise import normalise_name_value

_SEXES = ("M", "F")


class NicknameLexiconError(ValueError):
    """The lexicon file is malformed (names the file and the offending key)."""


class NicknameLexicon:
    """Maps a normalised given name to its canonical form.

    `canonical(name, sex)` returns the canonical given name; names not in the lexicon map to
    themselves. Short forms shared by male and female names resolve by sex (M/F) and otherwise
    stay as they are rather than guessing.
    """

    def __init__(
        self,
        names: dict[str, list[str]],
        ambiguous: dict[str, dict[str, str]],
        version: int,
        source: str = "<memory>",
    ) -> None:
        self.version = version
        self._map: dict[str, str] = {}
        self._by_sex: dict[str, dict[str, str]] = {}
        seen: dict[str, str] = {}

        def norm(value: object, where: str) -> str:
            out = normalise_name_value(str(value)) if value is not None else None
            if not out:
                raise NicknameLexiconError(f"{source}: empty name at {where}")
            return out

        for canon_raw, variants in (names or {}).items():
            canon = norm(canon_raw, f"names.{canon_raw}")
            if not isinstance(variants, list):
                raise NicknameLexiconError(f"{source}: names.{canon_raw} must be a list")
            for v_raw in [canon_raw, *variants]:
                v = norm(v_raw, f"names.{canon_raw}")
                if v in seen and seen[v] != canon:
                    raise NicknameLexiconError(
                        f"{source}: '{v}' listed under both names.{seen[v]} and names.{canon}"
                    )
                seen[v] = canon
                self._map[v] = canon
        for short_raw, by_sex in (ambiguous or {}).items():
            short = norm(short_raw, f"ambiguous.{short_raw}")
            if short in self._map and self._map[short] != short:
                raise NicknameLexiconError(
                    f"{source}: ambiguous.{short_raw} also listed under names.{self._map[short]}"
                )
            if not isinstance(by_sex, dict) or set(by_sex) - set(_SEXES):
                raise NicknameLexiconError(
                    f"{source}: ambiguous.{short_raw} must map M/F to canonical names"
                )
            self._by_sex[short] = {
                sx: self._map.get(
                    norm(c, f"ambiguous.{short_raw}.{sx}"), norm(c, f"ambiguous.{short_raw}.{sx}")
                )
                for sx, c in by_sex.items()
            }

    def __len__(self) -> int:
        return len(self._map) + len(self._by_sex)

    def canonical(self, name: str | None, sex: str | None = None) -> str | None:
        if not name:
            return None
        if name in self._by_sex:
            return self._by_sex[name].get(sex or "", name)
        return self._map.get(name, name)


def load_lexicon(path: str | Path | None = None) -> NicknameLexicon:
    if path is None:
        ref = resources.files("schemas").joinpath("nicknames.yaml")
        text, source = ref.read_text(encoding="utf-8"), "schemas/nicknames.yaml"
    else:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    data = yaml.safe_load(text) or {}
    unknown = set(data) - {"version", "names", "ambiguous"}
    if unknown:
        raise NicknameLexiconError(f"{source}: unknown keys {sorted(unknown)}")
    return NicknameLexicon(
        data.get("names") or {}, data.get("ambiguous") or {}, int(data.get("version", 0)), source
    )


@lru_cache(maxsize=1)
def default_lexicon() -> NicknameLexicon:
    return load_lexicon()
