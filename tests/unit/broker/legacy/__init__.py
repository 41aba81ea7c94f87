"""Unit tests of the broker's original (legacy) API."""
