"""`python -m replay oracle`: a policy's chunks at dataset frames against the dataset's own next actions.

`command` runs it; `sources` says where chunks come from (a server, or a checkpoint loaded here); `core` lines them
up; `stats`, `norm` measure; `result`, `report`, `markdown`, `plots`, `rerun_view` present.
"""
