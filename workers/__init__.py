"""Task kinds and the worker runtime. Nothing here may import a heavy library at module level."""
