"""The broker's TLS checks: the certificate chain verifies and names the host, and how long
until it expires.

    broker.tls           the certificate chain verifies (system CAs or the CA bundle)
    broker.cert_expiry   days until the certificate expires: warn < 30, fail < 7

An unverified handshake is made only to read the dates of a certificate that failed to
verify; no token is ever sent over it.
"""

from __future__ import annotations

import datetime
import socket
import ssl

from cryptography import x509

from node_setup.health.broker_access import HealthClient
from node_setup.health.result import Probe

CERT_WARN_DAYS = 30.0  # time to renew without hurry
CERT_FAIL_DAYS = 7.0  # a week: someone must act now


def check_tls(client: HealthClient, probe: Probe) -> bool:
    probe.start("broker.tls", f"TLS handshake with {client.host}:{client.port} hangs")
    where = f"{client.host}:{client.port}"
    try:
        with _tls_socket(client, client.context()) as tls:
            version = tls.version()
            cert = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        probe.fail(
            "broker.tls",
            where,
            "",
            f"the certificate does not verify: {exc.verify_message}",
            _tls_fix(exc),
        )
        _expiry(client, _fetch_unverified(client), probe)
        return False
    except (OSError, ssl.SSLError) as exc:
        probe.fail(
            "broker.tls",
            where,
            "",
            f"cannot connect with TLS: {exc}",
            f"check that the broker runs and listens with TLS on {where}",
        )
        return False
    probe.ok("broker.tls", version, "", f"the certificate of {client.host} verifies")
    _expiry(client, cert, probe)
    return True


def _tls_socket(client: HealthClient, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((client.host, client.port), client.deadline.left())
    try:
        return context.wrap_socket(raw, server_hostname=client.host)
    except BaseException:
        raw.close()
        raise


def _tls_fix(exc: ssl.SSLCertVerificationError) -> str:
    reason = str(exc.verify_message)
    if "expired" in reason:
        return "renew the broker's certificate now (and reload the broker)"
    if "hostname" in reason.lower() or "IP address mismatch" in reason:
        return "use the host name the certificate names in the URL, or reissue the certificate"
    return "give the broker's CA with ca_bundle (bridge config) / --ca-file, or fix its chain"


def _fetch_unverified(client: HealthClient) -> bytes | None:
    """The certificate without verifying it, only to read its dates (no token is sent)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with _tls_socket(client, context) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def _expiry(client: HealthClient, der: bytes | None, probe: Probe) -> None:
    if der is None:
        probe.unknown("broker.cert_expiry", "the certificate could not be read")
        return
    cert = x509.load_der_x509_certificate(der)
    ends = cert.not_valid_after_utc
    days = round((ends - datetime.datetime.now(datetime.UTC)).total_seconds() / 86400, 1)
    seen = f"expires {ends.date().isoformat()}"
    fix = f"renew the certificate of {client.host} and reload the broker"
    if days < CERT_FAIL_DAYS:
        probe.fail("broker.cert_expiry", days, "days", seen if days >= 0 else "expired", fix)
    elif days < CERT_WARN_DAYS:
        probe.warn("broker.cert_expiry", days, "days", seen, fix)
    else:
        probe.ok("broker.cert_expiry", days, "days", seen)
