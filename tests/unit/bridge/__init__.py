"""Unit tests of the bridge package: the console script, and the pull path's two ends together."""
