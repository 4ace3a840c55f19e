"""Shared test builders: data, labs, worlds. No fixtures, no tests."""
