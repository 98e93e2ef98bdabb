"""`python -m replay sim|real`: a dataset episode's actions on the simulated or real arms, through the safety path.

`command` runs it; `plan` checks the input, `preview` is the dry run, `run` plays it, `metrics` and `report` judge it.
"""
