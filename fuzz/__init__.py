"""Coverage-guided fuzz targets (atheris), one per module; run with ``scripts/fuzz``.

Not part of the test suite or CI: see ``docs/fuzzing.md``.
"""
