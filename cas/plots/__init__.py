"""Plots: DVC plot definitions and live step files of experiments, as Vega-Lite (spec/plots.md)."""
