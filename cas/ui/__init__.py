"""`tally ui`: a local web page over the experiments (cas/ui/app.py)."""
