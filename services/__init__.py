"""The mllgraph gRPC services (grpc.aio): ingestion, selection and inference.

`services.common` holds the plumbing they share: the error -> status mapping, the `rpc`
wrapper, server construction with health and reflection, graceful shutdown and logging.
"""
