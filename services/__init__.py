"""The mllgraph gRPC services (grpc.aio): ingestion, selection and inference.

`services.common` holds the plumbing they share: the `rpc` wrapper, server construction with
health and reflection, starting, health watching, graceful shutdown and the command line
(`start_service`, `watch_health`, `run_server`, `run_service_main`), and logging.
`services.errors` maps domain errors to gRPC status codes; messages they share with the Python
client convert in `mllgraph.wire`.
"""
