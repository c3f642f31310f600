"""Benchmarks (scripts run from the repo root); a package so that ``benchmarks.gpu`` imports first."""
