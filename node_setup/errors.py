"""Errors of the setup commands, under the project's root ``BridgeError``.

    BridgeError (bridge.core.errors)
    └── SetupError               setup cannot go on; the message names the flag or the fix
        ├── MissingValue         a value setup cannot detect was not given (non-interactive)
        ├── InvalidKey           a file given as a public key is not one
        └── OverwriteRefused     an existing file differs from what setup would write

A host key that does not match the given fingerprint raises ``bridge.core.errors.HostKeyRejected``
and an unreachable host ``SiteUnreachable``, as ``mint-bridge run`` does. Exit codes follow
``sysexits.h``, like the rest of mint-bridge.
"""

from __future__ import annotations

from bridge.core.errors import BridgeError, ExitCode


class SetupError(BridgeError):
    exit_code = ExitCode.CONFIG_INVALID  # 78, EX_CONFIG


class MissingValue(SetupError):
    exit_code = ExitCode.USAGE  # 64, EX_USAGE: rerun with the flag the message names


class InvalidKey(SetupError):
    exit_code = ExitCode.PARAMETER_INVALID  # 65, EX_DATAERR: the input file is not a key


class OverwriteRefused(SetupError):
    exit_code = ExitCode.STAGING_FAILED  # 73, EX_CANTCREAT: would not replace a file
