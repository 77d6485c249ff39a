"""Decisions without I/O: pure functions from values to values (no sockets, clock or randomness)."""
