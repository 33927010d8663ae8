"""The classification service: FastAPI over onnxruntime, serving the model bundles in ``models/``.

Kept thin on purpose: importing ``service`` imports neither FastAPI nor onnxruntime, and never torch.
Build the application with :func:`service.app.create_app`; start it with ``python -m service``.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
