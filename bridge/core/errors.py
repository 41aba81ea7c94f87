"""Every error mint-bridge raises, and the exit code each one gives ``mint-bridge run``.

Foreign exceptions (paramiko, OSError from pipes, json, tomllib) are converted where they enter
our code with ``raise ... from exc``; above that line nothing catches library-specific types.

    BridgeError
    ├── ConfigError                 a config file is missing or invalid (names file and key)
    │   └── SshSetupInvalid         the bridge node's own SSH files (key, ssh_config,
    │                               known_hosts) are missing or unusable: fixed on this side
    ├── InputMissing                a declared input cannot be read on the bridge node
    ├── JobRejected                 the site refused the request
    │   ├── CommandNotAllowed       the command name is not in the site's config
    │   ├── ParameterInvalid        a parameter is unknown, missing or fails its type/range/pattern
    │   └── InputRejected           an input name is unsafe or not accepted by the command
    ├── TransportError              the connection failed or dropped (transient: retried)
    │   ├── SiteUnreachable         DNS, TCP or SSH handshake failed (or the broker's TCP/TLS)
    │   ├── BrokerUnavailable       the broker answered 5xx or 429 (``retry_after`` in seconds)
    │   ├── HostKeyRejected         host key unknown or changed (never retried)
    │   └── AuthenticationFailed    the site refused our key, or the broker our token (never
    │       │                       retried; HTTP 401 and 403)
    │       └── AccountUnusable     the site's account cannot log in (no-login shell, expired)
    ├── ProtocolError               the peer broke the protocol
    │   ├── ShellNotQuiet           the site account's login shell printed text first
    │   ├── TransferCorrupted       a file arrived truncated or with a wrong SHA-256
    │   └── Conflict                the broker refused a change that conflicts with the job's
    │       │                       state (HTTP 409; ``code``, and ``offset`` it holds if any)
    │       └── LeaseLost           a newer lease holds the job (stale epoch): stop acting on it
    ├── StagingError                a path is unsafe or a file cannot be written
    │   └── ResultNotSent           one result could not be read at the site (the others go)
    ├── JobUnknown                  the site has no job with that id
    ├── JobFailedAtSite             the job ended without a solver exit code (walltime, lost, ...)
    ├── SiteError                   the site entry point failed internally
    │   ├── SiteConfigInvalid       the site's own config does not load (its admin fixes it)
    │   ├── AuditFailed             the site's audit log cannot be written: the job stops
    │   └── ResultsRejected         a site operator rejected a held job's results: none leave
    │   └── SchedulerError          a scheduler command failed (``transient`` says if retried)
    └── Cancelled                   the bridge was told to stop (SIGTERM/SIGINT)
        └── TimedOut                the overall timeout of ``mint-bridge run`` passed
"""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    """Exit codes of ``mint-bridge run`` for failures on the bridge's side.

    A job that ran exits with the solver's own code (0-63 in practice), or 128+N when the solver
    was killed by signal N, as a shell reports it. The bridge's own failures use the BSD
    ``sysexits.h`` range (64-78) and a few codes above it, so a MInt module can tell them apart.
    """

    OK = 0
    USAGE = 64
    PARAMETER_INVALID = 65
    INPUT_MISSING = 66
    SITE_UNREACHABLE = 69
    SITE_ERROR = 70
    STAGING_FAILED = 73
    TRANSFER_CORRUPTED = 74
    PROTOCOL_ERROR = 76
    COMMAND_NOT_ALLOWED = 77
    CONFIG_INVALID = 78
    HOST_KEY_REJECTED = 79
    AUTH_FAILED = 80
    JOB_LOST = 81
    WALLTIME_EXCEEDED = 82
    OUT_OF_MEMORY = 83
    NODE_FAILURE = 84
    PREEMPTED = 85
    CANCELLED_AT_SITE = 86
    JOB_UNKNOWN = 87
    TIMED_OUT = 88
    RESULT_WITHHELD = 89
    AUDIT_FAILED = 90
    RESULTS_REJECTED = 91
    CANCELLED = 143  # 128 + SIGTERM: what a shell reports for a job stopped by qdel


class BridgeError(Exception):
    """Root of every mint-bridge error. ``str(err)`` is a one-line reason naming the fix."""

    exit_code: ExitCode = ExitCode.SITE_ERROR
    transient = False

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_wire(self) -> dict[str, Any]:
        """The error as the site sends it to the bridge in an ``error`` frame."""
        wire: dict[str, Any] = {"kind": type(self).__name__, "message": self.message}
        if self.field is not None:
            wire["field"] = self.field
        return wire


class ConfigError(BridgeError):
    """``fix`` says what to do in a few words, for reports that show it apart (health)."""

    exit_code = ExitCode.CONFIG_INVALID

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message, field=field)
        self.fix = fix or "fix the key the message names"


class SshSetupInvalid(ConfigError):
    """A key file, SSH config or known_hosts file of the bridge node cannot be used.

    Permanent and local: no reconnect can help, and the fix is on the bridge node, so the
    message names the file, the setting that points at it and what to run.
    """


class InputMissing(BridgeError):
    exit_code = ExitCode.INPUT_MISSING


class JobRejected(BridgeError):
    exit_code = ExitCode.PARAMETER_INVALID


class CommandNotAllowed(JobRejected):
    exit_code = ExitCode.COMMAND_NOT_ALLOWED


class ParameterInvalid(JobRejected):
    exit_code = ExitCode.PARAMETER_INVALID


class InputRejected(JobRejected):
    exit_code = ExitCode.PARAMETER_INVALID


class TransportError(BridgeError):
    exit_code = ExitCode.SITE_UNREACHABLE
    transient = True


class SiteUnreachable(TransportError):
    pass


class HostKeyRejected(TransportError):
    exit_code = ExitCode.HOST_KEY_REJECTED
    transient = False


class AuthenticationFailed(TransportError):
    exit_code = ExitCode.AUTH_FAILED
    transient = False


class AccountUnusable(AuthenticationFailed):
    """The site accepted the key but its account cannot run anything (a no-login shell, an
    expired account): only the site admin can fix it, so it is never retried."""


class BrokerUnavailable(TransportError):
    """The broker is overloaded or down for a moment (5xx, 429); it may say when to retry."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, instance_down: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # 502/503: this instance (or the proxy's way to it) cannot serve; another may.
        self.instance_down = instance_down


class ProtocolError(BridgeError):
    exit_code = ExitCode.PROTOCOL_ERROR


class ShellNotQuiet(ProtocolError):
    """Text came before the protocol's first frame: the site account's login shell (its
    ``.bashrc``, a profile, a motd script) printed to stdout for a non-interactive login."""


class TransferCorrupted(ProtocolError):
    exit_code = ExitCode.TRANSFER_CORRUPTED


class Conflict(ProtocolError):
    """HTTP 409 from the broker: ``code`` is its stable error code (``offset_mismatch``,
    ``inputs_incomplete``, ...); ``offset`` the byte count it holds, when it said."""

    def __init__(self, message: str, *, code: str = "conflict", offset: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.offset = offset


class LeaseLost(Conflict):
    """Another lease (a newer epoch) holds the job: this agent must stop acting on it."""


class StagingError(BridgeError):
    exit_code = ExitCode.STAGING_FAILED


class ResultNotSent(StagingError):
    """The site could not send one result (unreadable, vanished, changed); the rest still go."""


class JobUnknown(BridgeError):
    exit_code = ExitCode.JOB_UNKNOWN


class JobFailedAtSite(BridgeError):
    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SiteError(BridgeError):
    exit_code = ExitCode.SITE_ERROR


class SiteConfigInvalid(SiteError):
    """The site's config does not load: the site entry says so in the protocol, and the
    bridge exits with the config code (the bridge's own config errors are ConfigError)."""

    exit_code = ExitCode.CONFIG_INVALID


class AuditFailed(SiteError):
    """The site could not write a line of its audit log (disk full, dir unwritable, a broken
    chain end): the job stops there, since nothing may leave the site unrecorded. ``path`` (the
    audit dir or file) is for the site's own log only; the message the bridge sees names no
    site path."""

    exit_code = ExitCode.AUDIT_FAILED

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.path = path


class SchedulerError(SiteError):
    """A scheduler command failed. Transient ones (timeouts, controller unreachable) are
    retried with backoff; others (invalid account, bad resource request) fail the job."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class Cancelled(BridgeError):
    exit_code = ExitCode.CANCELLED


class ResultsRejected(SiteError):
    """A site operator rejected the results of a job held for manual release: none left the
    site. The message carries the operator's reason."""

    exit_code = ExitCode.RESULTS_REJECTED


class TimedOut(Cancelled):
    exit_code = ExitCode.TIMED_OUT


_WIRE_KINDS: dict[str, type[BridgeError]] = {
    cls.__name__: cls
    for cls in (
        CommandNotAllowed,
        ParameterInvalid,
        InputRejected,
        JobRejected,
        ProtocolError,
        TransferCorrupted,
        StagingError,
        ResultNotSent,
        JobUnknown,
        SiteError,
        SiteConfigInvalid,
        AuditFailed,
        ResultsRejected,
    )
}


# The site closes a session whose bridge went silent before the job started (``PeerIdle``, a
# TransportError in bridge.core.protocol). The bridge hears that only when its own bytes were
# lost on the way (a black-holed link), so for it the error is the link's: retried, not fatal.
# Only this kind: a site cannot make other errors transient, and the retries stay bounded by
# ``reconnect_attempts`` whatever a site says.
_WIRE_TRANSIENT = {"PeerIdle"}


def from_wire(wire: Any) -> BridgeError:
    """Rebuild an error the site sent; unknown kinds become ``SiteError`` (never trust the peer)."""
    if not isinstance(wire, dict):
        return ProtocolError(f"site sent a malformed error: {wire!r:.200}")
    if str(wire.get("kind")) in _WIRE_TRANSIENT:
        said = str(wire.get("message", "no message"))[:2000]
        return TransportError(f"the site closed the session: {said}")
    cls = _WIRE_KINDS.get(str(wire.get("kind")), SiteError)
    message = str(wire.get("message", "site reported an error without a message"))[:2000]
    field = wire.get("field")
    return cls(message, field=str(field) if field is not None else None)
