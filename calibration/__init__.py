"""Calibration: joint zero offsets, gripper range, camera intrinsics/extrinsics, latency (files used by robot_client)."""
