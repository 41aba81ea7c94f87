"""Unit tests of bridge.client, the bridge node's side."""
