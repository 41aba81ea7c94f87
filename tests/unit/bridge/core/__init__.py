"""Unit tests of bridge.core, the shared core."""
