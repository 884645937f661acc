"""specc's version, written into every generated file (kept apart from specc/__init__.py, which imports the API)."""

__version__ = "0.1.0"
