"""The wire contract (policy.proto) and its generated code, plus numpy <-> wire conversions.

Generated modules: `protos.policy_pb2`, `protos.policy_pb2_grpc`. Conversions live in `protos.codec`.
"""

PROTOCOL_VERSION = 1
