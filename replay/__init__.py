"""Dataset layer: one Episode/Dataset API over LeRobot v2.1/v3.0, Diffusion-Policy zarr and our own recordings.

`replay.open.open_dataset(path)` detects the format; the tools (`python -m replay ...`) only ever see
`replay.dataset.Dataset`.
"""
