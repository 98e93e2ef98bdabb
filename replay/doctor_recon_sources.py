"""Moved to `replay.policy_sources` (shared by the doctor and the oracle); this name stays for old imports."""

from replay.policy_sources import ChunkAnswer, ChunkSource, FrameObservation, LocalModelSource, ServerSource

__all__ = ["ChunkAnswer", "ChunkSource", "FrameObservation", "LocalModelSource", "ServerSource"]
