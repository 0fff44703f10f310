"""The web page (`mllgraph serve web`): try a task, browse the hub and the concept graph, and a
JSON API beside it. In: the gRPC services (through `mllgraph.client`) and, for the concept
search, the SDAG in Neo4j (read-only: `cypher/graph/{children,is_a_among}`,
`cypher/cookbook/heads_covering_subtree`). Out: HTML pages and JSON."""
