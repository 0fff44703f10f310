#!/usr/bin/env bash
# Attach the emoji world's probe sets to a hub, leaving one style out, then relabel the models
# whose heads they touch (one model's work each), through the public commands only:
#   mllgraph hub emoji probes  ->  mllgraph probes add --folder (per style)  ->  models label --stale
#
# usage: scripts/emoji_probes.sh HELD_OUT_STYLE [CONCEPTS_TSV] [PER_STYLE]
#   HELD_OUT_STYLE  openmoji | fluent-flat | fluent-modern | twemoji: no probe comes from it
#   CONCEPTS_TSV    the mapping emoji -> synset (default mllgraph/hubs/emoji/concepts.tsv)
#   PER_STYLE       augmented images per (concept, style) (default 10)
# A hub is meant for one held-out style: probe sets of every other style are attached, so
# evaluate it on the held-out style's task images only (`mllgraph hub emoji tasks`).
# MLLGRAPH=... overrides the command (default: mllgraph from PATH, else .venv/bin/mllgraph).
set -euo pipefail
cd "$(dirname "$0")/.."
held_out="${1:?usage: $0 HELD_OUT_STYLE [CONCEPTS_TSV] [PER_STYLE]}"
concepts="${2:-mllgraph/hubs/emoji/concepts.tsv}"
per_style="${3:-10}"
[ -f "$concepts" ] || { echo "no concepts file $concepts (the emoji -> synset mapping)" >&2; exit 2; }
mllgraph="${MLLGRAPH:-$(command -v mllgraph || echo .venv/bin/mllgraph)}"
home="${MLLGRAPH_HOME:-.mllgraph}"
out="$home/emoji-probes/held-out-$held_out"

rm -rf "$out"  # the folders are made again, identically (seeded), from the concepts file
$mllgraph hub emoji fetch
$mllgraph hub emoji probes --concepts "$concepts" --held-out "$held_out" --out "$out" \
  --per-style "$per_style"
for folder in "$out"/*/; do
  style="$(basename "$folder")"
  $mllgraph probes add --folder "$folder" --source "emoji:$style"
done
$mllgraph models label --stale
