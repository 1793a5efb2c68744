"""Salt chaining: a salt splits one name into many hub values ("this name in this birth year"),
but a record that carries the name under two salts tells the hub those two values are one name.

The spec's estimated-DOB tokens carry a forename variant + surname sound under the four birth
years around an estimate, in tok_given_name_canonical's key domain (so they equal other
records' tokens of those years); a blocking key of the same names without the year (the
blk_names_postcode_sector and blk_family_postcode that spec v3's eighth amendment dropped) is
shared by the records of one name in one sector or family whatever their birth years. The hub
merges every such value a record carries (union-find over the values,
record by record) and aligns the merged classes' sizes with the frequencies of the unsalted
names in its reference set: the more a chain merges, the more the classes count like unsalted
names, which frequency alignment decodes. Any token that joins one person's or one
household's records does the same ("record links": a household's members share a surname
across birth years, a person's records share a name across a mis-keyed year), and a salt
shared by unrelated people (this surname sound in this birth year) carries the merge from
one household to the next.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from benchmarks.attacks.data import SEP, preimage

#: Salt sources besides the DOB's parts: what a name is hashed with so it does not repeat.
SALTS = frozenset(
    {
        "sex",
        "postcode",
        "postcode_sector",
        "postcode_district",
        "phone",
        # a letter of the forename salting a surname key: the attacker decodes the surname
        "given_name_canonical_initial",
        "given_name_initial",
        "given_name_final",
    }
)


def _salt(source: str) -> bool:
    return source in SALTS or source.startswith("dob_")


#: Normalised sources that are functions of another (a nickname's canonical form, a sound).
DERIVED_FROM = {
    "given_name_canonical": "given_name",
    "given_name_phonetic": "given_name",
    "given_name_initial": "given_name",
    "given_name_canonical_initial": "given_name_canonical",
    "family_name_phonetic": "family_name",
    "family_name_initial": "family_name",
}


def _sources(col: dict[str, Any]) -> list[str]:
    return list(col.get("sources") or [col.get("source")])


def _names(sources: list[str]) -> bool:
    return any(s.startswith(("given_name", "family_name", "other_names")) for s in sources)


def _implies(sources: list[str], wanted: list[str]) -> bool:
    """Equal values of a column built from `sources` mean equal `wanted` sources (each
    wanted source is among them, or the source it is computed from is)."""
    have = set(sources)
    return all(w in have or DERIVED_FROM.get(w) in have for w in wanted)


def _links_records(sources: list[str]) -> bool:
    """A column with no part of the DOB in it: its equal values join records whatever their
    birth dates say (an NHS number, a phone, an address, a name at a postcode)."""
    return not any(s.startswith("dob_") for s in sources)


def chains(spec: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Year-salted token column -> partner sets, each the other columns whose values the hub
    merges it through: "name keys" (same key domain under another salt, or a key implying
    the same unsalted names with no birth year) and "record links" (those plus every token
    joining records whatever their birth dates: `_links_records`)."""
    columns = {
        name: (section, col)
        for section in ("tokens", "blocking")
        for name, col in ((spec.get(section) or {}).get("columns") or {}).items()
    }
    out: dict[str, dict[str, list[str]]] = {}
    for name, (section, col) in columns.items():
        srcs = _sources(col)
        if not (_names(srcs) and any(s.startswith("dob_") for s in srcs)):
            continue  # only names salted with a part of the DOB (tokens and blocking keys)
        if any("estimated" in s for s in srcs):
            continue  # another year's copy of a token attacked under its own name
        plain = [s for s in srcs if not _salt(s)]
        domain = col.get("domain") or name
        keys = []
        for other, (osec, ocol) in columns.items():
            if other == name:
                continue
            osrcs = _sources(ocol)
            same_domain = (ocol.get("domain") or other) == domain and osec == section
            same_value = [s for s in osrcs if not _salt(s)] == plain and (
                ocol.get("part"),
                ocol.get("compact"),
            ) == (col.get("part"), col.get("compact"))
            if same_value:
                keys.append(other)  # the same names under another salt
            elif (
                not same_domain
                and not any(s.startswith("dob_") for s in osrcs)
                and _implies(osrcs, plain)
            ):
                keys.append(other)  # the same names with no birth year at all
        links = keys + [
            c for c, (_, oc) in columns.items() if c not in keys and _links_records(_sources(oc))
        ]
        out[name] = {"name keys": keys, "record links": links} if keys else {"record links": links}
    return out


def unsalted(frame: pd.DataFrame, spec: dict[str, Any], column: str) -> np.ndarray:
    """`column`'s value without its salts, per row of `frame` (normalised identifiers): what
    the merged classes stand for, built by the bridge's own code (name parts, compaction).
    None where a part is missing."""
    section = next(
        sec for sec in ("tokens", "blocking") if column in (spec.get(sec) or {}).get("columns", {})
    )
    conf = dict(spec[section]["columns"][column])
    conf["sources"] = [s for s in _sources(conf) if not _salt(s)]
    conf.pop("source", None)
    if len(conf["sources"]) < int(conf.get("unordered") or 0):
        conf.pop("unordered")
    kept = [o for o in conf.pop("optional", []) if o in conf["sources"]]
    if kept and len(conf["sources"]) > len(kept):
        conf["optional"] = kept
    bare = {
        "encoding_spec_version": spec["encoding_spec_version"],
        section: {"columns": {column: conf}},
    }
    return preimage(bare, frame, column)


def merged_classes(
    rec: pd.DataFrame, column: str, partners: list[str], domains: dict[str, str]
) -> np.ndarray:
    """Per record, the class its `column` value falls in once every value of `column` and
    `partners` a record carries is merged (values compared within their key domain)."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    cols = [column, *partners]
    values = rec[cols].to_numpy(dtype=object)
    for row in values:
        nodes = [(domains[c], v) for c, v in zip(cols, row, strict=True) if pd.notna(v)]
        if len(nodes) > 1:
            first = find(nodes[0])
            for n in nodes[1:]:
                r = find(n)
                if r != first:
                    parent[r] = first
    own = rec[column].to_numpy(dtype=object)
    out = np.full(len(own), None, dtype=object)
    for i, v in enumerate(own):
        if pd.notna(v):
            d, val = find((domains[column], v))
            out[i] = f"{d}{SEP}{val}"
    return out
