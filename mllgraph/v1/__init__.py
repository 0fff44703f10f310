"""Generated gRPC code for the mllgraph.v1 protos (proto/mllgraph/v1/).

Do not edit the ``*_pb2*`` modules: regenerate them with ``python -m mllgraph.protos``.
"""
