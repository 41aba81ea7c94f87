"""Replacement for the original workflow client ``mi-system-wf.py`` (API method), on the new
broker API.

Same command line::

    mi-system-wf.py URL SITE TOKEN COMMAND in1:in2 out1:out2 [PARAMS]

Same outputs: the declared output files in the current directory, plus
``計算標準出力.txt`` and ``計算標準エラー出力.txt`` with the job's stdout and stderr; exit 0 when
the job completed and every declared output exists, else 1.

Differences, on purpose:
- ``URL`` is ``scheme://host`` and ``:50443`` is appended, as before; a URL that already
  carries a port is used as it is.
- ``TOKEN`` on a command line is visible to every user of the machine (``ps``). Pass ``-`` to
  read it from ``$MINT_BRIDGE_TOKEN``, or ``@FILE`` to read it from a file only you can read.
- ``COMMAND`` names a command of the site's config (a path stands for its file name); the
  string as given and the declared outputs also go with the job, so an original poller that
  still serves the site runs it as before.
- ``PARAMS`` are ``name=value`` words for the command's declared parameters (the original
  silently ignored them); anything else is refused.
- The CA that verifies the broker is the system's, or ``$REQUESTS_CA_BUNDLE`` (as requests did).
- It waits with long polls, not 10 s sleeps, and checks every file's SHA-256.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
from typing import BinaryIO
from urllib.parse import urlsplit

from bridge.client.node_config import BrokerSite
from bridge.core.errors import BridgeError, ParameterInvalid
from bridge.core.job import JobState
from bridge.core.paths import check_relative_path

STDOUT_FILE = "計算標準出力.txt"
STDERR_FILE = "計算標準エラー出力.txt"
ORIGINAL_PORT = 50443


class Tee(io.RawIOBase):
    """Writes to the terminal and keeps a copy for the result file."""

    def __init__(self, terminal: BinaryIO) -> None:
        self.terminal = terminal
        self.copy = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.terminal.write(data)
        self.terminal.flush()
        return self.copy.write(data)


def broker_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ParameterInvalid(f"URL {url!r} must look like https://host")
    return url if parts.port else f"{url.rstrip('/')}:{ORIGINAL_PORT}"


def read_token(argument: str) -> str:
    if argument == "-":
        token = os.environ.get("MINT_BRIDGE_TOKEN", "")
        if not token:
            raise ParameterInvalid("TOKEN is '-' but $MINT_BRIDGE_TOKEN is empty")
        return token.strip()
    if argument.startswith("@"):
        try:
            with open(argument[1:], encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ParameterInvalid(
                f"cannot read the token file {argument[1:]}: {exc.strerror}"
            ) from exc
    return argument


def parse_params(text: str) -> list[str]:
    words = text.split()
    for word in words:
        if "=" not in word:
            raise ParameterInvalid(
                f"parameter {word!r} must be name=value (a parameter the site's command declares)"
            )
    return words


def main(argv: list[str]) -> int:
    if len(argv) not in (6, 7):
        print("usage: mi-system-wf.py URL SITE TOKEN COMMAND in1:in2 out1:out2 [PARAMS]",
              file=sys.stderr)  # fmt: skip
        return 1
    url, site_name, token_arg, command, inputs, outputs = argv[:6]
    try:
        return _run(url, site_name, read_token(token_arg), command,
                    [i for i in inputs.split(":") if i], [o for o in outputs.split(":") if o],
                    parse_params(argv[6] if len(argv) == 7 else ""))  # fmt: skip
    except BridgeError as exc:
        print(f"mi-system-wf: error: {exc}", file=sys.stderr)
        return 1


def _run(
    url: str, site_name: str, token: str, command: str, inputs: list[str], outputs: list[str],
    params: list[str],
) -> int:  # fmt: skip
    from bridge.client.run import run_job_at

    private = tempfile.mkdtemp(prefix="mi-system-wf.")
    try:
        token_file = os.path.join(private, "token")
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token + "\n")
        site = BrokerSite(
            name=site_name,
            url=broker_url(url),
            token_file=token_file,
            ca_bundle=os.environ.get("REQUESTS_CA_BUNDLE") or None,
            broker_site=site_name,
        )
        results = os.path.join(private, "results")
        out, err = Tee(sys.stdout.buffer), Tee(sys.stderr.buffer)
        result = run_job_at(
            site,
            command=os.path.basename(command.rstrip("/")),
            inputs=inputs,
            params=params,
            output_dir=results,
            streams=(out, err),  # type: ignore[arg-type]
            # An original poller still serving the site runs the command string as given and
            # sends back only the files it is told of: either end may move over first.
            extra_metadata={"legacy_command": command, "legacy_result_files": ":".join(outputs)},
        )
        _write_log(STDOUT_FILE, out.copy.getvalue())
        _write_log(STDERR_FILE, err.copy.getvalue())
        missing = _deliver(results, outputs)
        completed = result.outcome.state is JobState.COMPLETED
        if missing:
            print(f"mi-system-wf: declared outputs missing: {', '.join(missing)}", file=sys.stderr)
        return 0 if completed and not missing else 1
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _write_log(name: str, data: bytes) -> None:
    # As the original poller wrote them: the output followed by an empty line.
    with open(name, "wb") as handle:
        handle.write(data + b"\n\n")


def _deliver(results: str, outputs: list[str]) -> list[str]:
    """Move each declared output into the current directory; return the missing ones."""
    missing = []
    for name in outputs:
        check_relative_path(name)  # a declared name never reaches outside either directory
        source = os.path.join(results, name)
        if os.path.isfile(source) and not os.path.islink(source):
            os.makedirs(os.path.dirname(name) or ".", exist_ok=True)
            shutil.move(source, name)
        else:
            missing.append(name)
    return missing
