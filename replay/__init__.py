"""Tools over the whole stack: the data doctor, the oracle, arm replay, rerun views, stats and the sample dataset.

Top floor: it imports the data layer (`robodata`), the normalization (`policy_norm`), the server and the robot
client, and nothing imports it. `python -m replay <command>` is the entry point (`replay.cli`).
Sub-packages: `doctor/` (what is wrong with a dataset), `oracle/` (a policy's chunks against the dataset's actions),
`arm_replay/` (dataset actions on sim or real arms through the safety path), `view/` (rerun views).
"""
