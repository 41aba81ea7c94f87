"""The resilience suite's services: the integration suite's real sshd and gunicorn+TLS brokers."""

from tests.integration.conftest import broker_factory  # noqa: F401  (a fixture, used by name)
