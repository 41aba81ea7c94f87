"""Every default value in one place, each with the reason for it."""

from __future__ import annotations

# Work dirs live where the original put them (/tmp/<uuid>), so existing site scripts still work.
WORK_BASE = "/tmp"

# Kept a week after the job ends: long enough to re-attach after a weekend outage and to debug,
# short enough that /tmp does not fill up.
RETENTION_SECONDS = 7 * 24 * 3600

# One MiB moves a large file with few system calls and little memory (both ends stay ~constant).
CHUNK_SIZE = 1024 * 1024

# The site sends a heartbeat when nothing else happened for this long, so a bridge notices a
# silent dead connection within HEARTBEAT_TIMEOUT even where TCP keepalives are filtered.
HEARTBEAT_SECONDS = 5.0
HEARTBEAT_TIMEOUT = 3 * HEARTBEAT_SECONDS + 5.0

# Log tailing starts fast (a short job finishes with little overhead) and backs off to this:
# the end of a job is noticed within 0.1 s, for a few small file reads a second while it runs.
LOG_POLL_MIN = 0.01
LOG_POLL_MAX = 0.1

# SSH: detect dead peers quickly and never hang forever connecting.
SSH_CONNECT_TIMEOUT = 15.0
SSH_KEEPALIVE_SECONDS = 15
# OpenSSH client: jobs to one site share a connection while it has been idle less than this
# (ControlPersist), so a burst of short jobs pays one handshake; long enough to span the gaps
# between a workflow's steps, short enough not to hold idle connections open for hours.
SSH_CONNECTION_PERSIST = 600.0
# Control sockets of shared connections: private to the user (0700), short enough for a
# unix socket path once OpenSSH appends the 40-digit connection hash.
SSH_CONTROL_DIR = "~/.local/state/mint-bridge/ssh"

# Reconnects after a dropped connection: bounded, exponential with jitter, about 4 minutes in all,
# enough to ride out a site's sshd restart or a short network outage.
RECONNECT_ATTEMPTS = 8
RECONNECT_INITIAL_WAIT = 0.5
RECONNECT_MAX_WAIT = 60.0

# After SIGTERM (qdel), how long the bridge waits for the site to confirm the cancel. PBS sends
# SIGKILL after its kill_delay (default 2 s, often raised); stay well within a few seconds.
CANCEL_CONFIRM_SECONDS = 4.0

# Local scheduler: grace between SIGTERM and SIGKILL when a job hits its walltime (time for a
# solver to write what it has) and when it is cancelled (short: qdel must take effect in seconds).
KILL_GRACE_SECONDS = 10.0
CANCEL_GRACE_SECONDS = 3.0

# Staging limits a site may lower or raise in its config.
MAX_INPUT_FILES = 1000
MAX_INPUT_BYTES = 1 << 40  # 1 TiB: effectively "no limit" unless the site sets one
MAX_NAME_LENGTH = 255

# The exec request the bridge sends; a forced command that sees anything else refuses it.
PROTOCOL_REQUEST = "mint-bridge-protocol"

# Broker (HTTPS). Connecting is quick or broken; a plain API call answers in well under the read
# timeout. Long polls add their wait to it, so a healthy long poll never times out.
HTTP_CONNECT_TIMEOUT = 15.0
HTTP_READ_TIMEOUT = 60.0
LONG_POLL_MARGIN = 30.0
# Retries of one call: bounded, exponential with full jitter (many agents and clients restarting
# together do not hammer a broker in step), about the same budget as SSH reconnects.
HTTP_ATTEMPTS = 8
HTTP_INITIAL_WAIT = 0.5
HTTP_MAX_WAIT = 30.0
# Long-poll waits: the contract's maxima, so an idle client or agent costs one request a minute
# while anything new reaches it at once.
BROKER_POLL_WAIT = 50.0
LEASE_WAIT = 20.0
# One PATCH of an upload: large enough that a GiB needs few requests, small enough that a cut
# costs little (the next request resumes from the broker's offset).
UPLOAD_CHUNK = 64 * 1024 * 1024
# An agent runs at most this many jobs at once unless its [agent] table says otherwise.
AGENT_MAX_JOBS = 2
# Downloads are written in pieces of this size: a cut loses at most one piece in flight.
DOWNLOAD_CHUNK = 256 * 1024

# How long the site entry waits for the bridge's next byte before its job starts (the request,
# each staged input's frames). A connection that sends nothing (``ssh -N`` with MInt's key, a
# stuck client) is closed after this; once the job runs the site only writes.
IDLE_TIMEOUT_SECONDS = 60.0

# The site's audit log: in the site account's state dir (XDG's, ``~/.local/state`` unless
# $XDG_STATE_HOME says otherwise), which stays private (0700) and outlives the work dirs.
AUDIT_DIR = "~/.local/state/mint-bridge/audit"
# What may leave a site when its config has no [egress] table. Large enough for any real
# solver's results, small enough that a runaway or sparse file (a 1 TiB hole) is withheld from
# its size alone, before a byte of it is read.
EGRESS_MAX_FILE_SIZE = 64 << 30  # 64 GiB per file
EGRESS_MAX_JOB_SIZE = 256 << 30  # 256 GiB per job
EGRESS_MAX_FILES = 10_000  # as many as the legacy API returns for one job
# Where ``mint-bridge site index-private`` keeps its SHA-256 index of the private files.
PRIVATE_INDEX = "~/.local/state/mint-bridge/private-index.json"
