"""Side-by-side benchmarks of tally against DVC and against the machine's limits.

Entry point: ``python -m bench.run [--quick] [--scale] [--reps N] [--only ROW]``
(``make bench`` / ``make bench-quick``). Modules, by noun:

- ``workload``: the deterministic data sets (L, S, X) and the trivial pipeline (E).
- ``dvc_env``: DVC 3.67.1 in its own virtualenv, installed once.
- ``measure``: one timed child process (wall seconds, peak RSS), page-cache control.
- ``tools``: the two CLIs (tally, DVC) behind one adapter; project templates.
- ``datapath``: the add / status / checkout rows.
- ``experiments``: the run / queue / show / restore / CLI-start rows.
- ``gcbench``: the gc rows; ``gcworkload`` their workload (1,000 experiments, 50,000
  objects); ``tally_gcstore`` and ``tally_clone`` the tally halves of setups that
  clone one real experiment (run as children, through cas).
- ``limits``: what the machine can do (BLAKE3, copy, link, stat, spawn).
- ``rows``: the row catalogue and the DESIGN.md goals.
- ``report``: the Markdown tables (stdout and ``bench/RESULTS.md``).

Benchmarks are not tests: nothing here asserts a timing.
"""
