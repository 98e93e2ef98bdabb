"""Policy server: typed gRPC (and openpi-compatible websocket) serving of VLA policies on the GPU box."""

__version__ = "0.1.0"
