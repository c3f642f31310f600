"""DVC stage entry points: each ``python -m stages.NAME`` reads params.yaml and calls qvad.

Not empty on purpose: DVC warns about an empty dependency file on every stage.
"""
