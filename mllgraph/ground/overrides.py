"""Overrides of WordNet for grounding: whole names it lacks or gets wrong, and preferred
senses (`mllgraph/ground/overrides.json`, each entry with its reason).

- `Overrides`: the two tables, keyed as the resolver looks them up (`names` by the
  normalised class name, `senses` by lemma key).
- `load_override_file`, `default_overrides`: the packaged file, parsed.

Imports `ground.words` only; must not import the resolver or anything above ground.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from mllgraph.ground.words import fold, normalise_name, to_key


@dataclass(frozen=True)
class Overrides:
    names: Mapping[str, str]  # normalised class name -> wnid
    senses: Mapping[str, str]  # lemma key -> preferred wnid

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Overrides:
        def table(section: str, key_fn: Callable[[str], str]) -> dict[str, str]:
            return {key_fn(k): v["wnid"] for k, v in data.get(section, {}).items()}

        return cls(
            names=table("names", normalise_name),
            senses=table("senses", lambda k: to_key(fold(k))),
        )


def load_override_file() -> dict[str, Any]:
    """The packaged `mllgraph/ground/overrides.json`, parsed."""
    text = resources.files("mllgraph.ground").joinpath("overrides.json").read_text(encoding="utf-8")
    return json.loads(text)


def default_overrides() -> Overrides:
    return Overrides.from_json(load_override_file())
