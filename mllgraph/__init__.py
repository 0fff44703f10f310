"""mllgraph: Model Label Learning — zero-shot classification by reusing expert heads.

The SDAG (WordNet 3.0 nouns) and the head→concept labels live in Neo4j; selection (CHCO),
inference and ingestion are gRPC services. See README.md.

Rooms, lowest first. A room imports only from rooms above it in this list (and from
itself); `tests/test_layout.py` walks every import, lazy ones included, and fails on a
circle or on a room importing one listed after it.

    base      errors, paths, settings, auth, protos, threads, gc_pause, v1 (generated):
              no subpackage
    combine   pure maths of combining heads (numpy, scipy, scikit-learn; no I/O)
    plan      the plan contract: request, document, apply
    graph     the SDAG in Neo4j: driver layer, Cypher loader, WordNet, local server
    hub       the catalogue: models, weights, probes, probe outputs, forward passes
    ground    class names to concepts
    label     step 1: what each head recognises
    select    step 2: CHCO, from class names to a stored plan
    reuse     step 3: serving a plan (images, model cache, batching)
    hubs      standard-hub builders (Fashion-MNIST), through the steps above
    wire      proto conversions shared by the services and the client
    client    the typed Python client of the three services (client, client_types)
    services  the gRPC servers (thin wiring), and starting them locally
    web       the web page over the client
    eval      evaluation, benchmarks, the demo
    cli       the `mllgraph` command line: the entry point over everything
"""

__version__ = "0.1.0"
