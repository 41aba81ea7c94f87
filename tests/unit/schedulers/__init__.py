"""Unit tests of the scheduler adapters (fixtures/ holds output captured from each scheduler)."""
