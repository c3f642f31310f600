"""Data parallelism: one process per GPU (or several CPU processes) started by torchrun."""
