"""Helpers of ``benchmarks/service_load.py``: the load generator, the servers under test and the report.

Importing this package imports nothing heavy; only :mod:`benchmarks.load.ceiling` imports onnxruntime (via
:mod:`benchmarks.onnx_throughput`), and the script imports it lazily.
"""
