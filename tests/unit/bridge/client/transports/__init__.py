"""Unit tests of bridge.client.transports."""
