"""`python -m replay doctor`: what is wrong with a dataset (and a checkpoint's view of it) before motion.

`command` runs it; `checks` (data only), `norm` (against a checkpoint), `arms`, `bins`, `recon` are the checks;
`findings` is the result type; `report`, `sections`, `plots` write the report.
"""
