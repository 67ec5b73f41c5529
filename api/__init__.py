"""The HTTP face of memvisor (FastAPI)."""
