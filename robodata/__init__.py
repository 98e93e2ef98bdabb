"""The data layer: one Episode/Dataset API over LeRobot v2.1/v3.0, Diffusion-Policy zarr and our own recordings.

Ground floor: imported by the server, the robot client and the tools; imports nothing of theirs.
`robodata.open.open_dataset(path)` detects the format; everything above only ever sees `robodata.dataset.Dataset`.
Also here: the recording writer (`recording`), video decoding (`video`), feature statistics (`stats`) and the
action-to-state lag estimator (`lag`).
"""
