"""Unit tests of bridge.site, the external site's side."""
