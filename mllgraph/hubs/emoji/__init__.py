"""Emoji in several art styles: a hub of probe images (concepts.tsv maps emoji to WordNet)."""
