"""Unit tests of node setup."""
