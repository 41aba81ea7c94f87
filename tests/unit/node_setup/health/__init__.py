"""Unit tests of the health checks."""
