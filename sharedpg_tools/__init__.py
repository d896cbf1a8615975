"""sharedpg: init and sidecar utilities for apps that share one PostgreSQL server."""

__version__ = "0.1.0"
