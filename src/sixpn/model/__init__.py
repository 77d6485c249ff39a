"""Frozen value types and the one error tree. Standard library only."""
