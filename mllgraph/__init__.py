"""mllgraph: Model Label Learning — zero-shot classification by reusing expert heads.

The SDAG (WordNet 3.0 nouns) and the head→concept labels live in Neo4j; selection (CHCO),
inference and ingestion are gRPC services. See README.md.
"""

__version__ = "0.1.0"
