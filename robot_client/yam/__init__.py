"""Real I2RT YAM arms over CAN: Damiao MIT codec, bus opening, arm/robot driver and a motor emulator for tests.

Modules, one job each:
- `protocol`: pure encode/decode of Damiao frames (no I/O), so the driver and the emulator share one codec.
- `transport`: request/reply transactions on one bus (timeouts, retries, CAN send errors).
- `bus`: opening a python-can bus for an arm, with actionable errors when the link is down.
- `gripper`: motor radians <-> normalized gripper opening.
- `arm`: one arm (6 joints + gripper on one bus); `driver`: `YamRobot`, the `Robot` backend.
- `rig_calibration`: the rig calibration file's zero offsets and gripper limits, checked and handed to the arms.
- `motor_model` / `emulator`: emulated motors speaking the protocol on a bus, with fault injection.
"""
