"""The emoji world: emoji concepts drawn in several art styles, from openly licensed npm
packages, as probe sets and task images for leave-one-style-out evaluation.

- `install`: the pinned packages (openmoji 17.0.0, fluentui-emoji 1.3.0,
  emoji-datasource-twitter 16.0.0), fetched with `npm pack`, integrity-checked, unpacked into
  a cache outside the home (`MLLGRAPH_EMOJI_CACHE`, default `~/.cache/mllgraph/emoji`).
- `catalogue`: hexcode -> {style: source file} for the styles `openmoji`, `fluent-flat`,
  `fluent-modern`, `twemoji`, with each style's licence (CC-BY-SA-4.0, MIT, MIT, CC-BY-4.0).
- `raster`: SVG/PNG to fixed-size RGBA (resvg), cached.
- `augment`: seeded scenes (background, scale, position, small rotation). Pure.
- `split`: the style split, probe folders for `mllgraph probes add --folder`, task images.
- `experts`: small emoji experts, one per concept group and arch, trained on given styles
  only, cached (imports `hub`, torch and timm lazily); `build`: their registration, domain
  profile and labelling (imports `label`, like the Fashion builder).

Only these styles exist here. One further style is reserved for an outside evaluation of this
project, and two vendors' sets have restrictive licences: no package, path or name of theirs
appears in this package (`tests/test_emoji_data.py` checks the sources).

The images' modules import base and numpy/PIL/resvg only; nothing here imports select, reuse,
the services or above.
"""
