"""Scripts that regenerate documentation (docs/results.md's tables, docs/figures/) from committed results and
models, e.g. ``python -m scripts.results_tables --check``. Measurements live in benchmarks/."""
