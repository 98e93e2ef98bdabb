"""rerun views of the stack: datasets and recordings (`python -m replay view`) and live runs (`LiveLogger`).

Modules: `layout` (entity paths, styling, blueprint), `kinematics` + `robot3d` (the arms in 3D from the MJCF),
`chunks` (predicted chunks as fans), `columns` (columnar sends), `extras` (recording extras by shape),
`text` + `norm` (warnings and events), `sinks` (file / server / viewer), `episode` + `dataset_view` (offline),
`live` + `live_writer` (online), `cli` (the `view` command).

Nothing is imported here, so `python -m replay` commands that do not view pay nothing for rerun or mujoco.
"""
