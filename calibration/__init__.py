"""Calibration: joint zero offsets, gripper range, camera intrinsics/extrinsics, latency.

The files it writes are read by robot_client.
"""
