"""Every default of the broker in one place, each with the reason for it."""

from __future__ import annotations

# The port of the original deployment's broker, so existing firewall rules keep working.
PORT = 50443

# Long polls hold a server thread each (claims up to 50 s, status and log polls up to 50 s).
# 256 threads serve ~200 agents and clients waiting at once plus ordinary requests; threads
# are cheap while they wait (a blocked thread costs some stack, no CPU).
THREADS = 256

# Threads for ordinary requests (uploads, downloads, status calls, /health), a pool of their
# own that long polls never enter (``broker.edge_worker``). An upload holds one while its
# body arrives, so this bounds uploads at once; more wait in line, they are not refused.
REQUEST_THREADS = 64

# The connection front (``broker.edge_worker``): a TLS handshake takes milliseconds and a
# request header one packet, so 10 s for each is generous for a slow link and short for an
# attacker holding sockets open.
HANDSHAKE_TIMEOUT = 10.0
HEADER_TIMEOUT = 10.0

# Open connections at once (sockets; idle ones cost a few KiB) and per source address. An
# agent holds a claim plus a lease poll per running job, a bridge node a status and two log
# polls per job (64 long polls per token); 256 leaves room for a few tokens behind one NAT.
MAX_CONNECTIONS = 4096
MAX_CONNECTIONS_PER_ADDRESS = 256

# A request body must average at least this many bytes/s once ``BODY_TIMEOUT`` has passed, so
# a client dribbling a byte a second frees its thread; 1 KiB/s is below any real link.
MIN_BODY_RATE = 1024

# Threads of the long-poll pool no waiter may take, so a long poll over the limit still gets
# its 503 at once instead of queueing for a thread (ordinary requests have their own pool).
RESERVED_THREADS = 16

# Long polls one token may hold at once: an agent needs a claim plus a lease poll per running
# job; a bridge node a status and two log polls per job. More means a runaway client.
LONG_POLLS_PER_TOKEN = 64

# Agents renew every ~20 s; 60 s survives two lost renewals before a job counts as lost.
LEASE_TTL = 60.0

# A queued job nobody claims for a day is failed with a reason, instead of waiting forever.
QUEUE_TTL = 86400.0

# An agent polls at least every ~50 s (a claim's longest wait) or renews its leases every
# ~20 s; a site none of whose agents did either for 2 min has no agent online, and a job
# waiting for it says so (in its document, and ``mint-bridge run`` on stderr).
AGENT_ABSENT_AFTER = 120.0

# Results and logs are kept a week unless acknowledged: time to fetch them after an outage.
RETENTION = 7 * 86400.0

# Lease and TTL expiry run this often; leases are 60 s, so a few seconds late is harmless.
HOUSEKEEPING_INTERVAL = 5.0

# JSON control bodies are small; anything bigger is a mistake or an attack.
MAX_JSON_BYTES = 1 << 20

# Log bytes a client gets per request, so one answer never holds much memory.
MAX_LOG_READ = 1 << 20

# Request bodies are read in pieces of this size. When a client stalls or resets mid-body, the
# piece being read is lost (the server's reader raises before returning it); the client
# resends it from the offset the broker holds, so small pieces waste little.
READ_SIZE = 64 * 1024

# A request body that sends nothing for this long frees its thread (and upload lock).
BODY_TIMEOUT = 120.0

# After an error answer, the rest of a request body is read and dropped up to this much, so a
# client still sending (one upload chunk is 64 MiB) reads the answer instead of a reset.
MAX_DRAIN = 128 << 20

# How long a second upload to the same file waits for the first to finish before 503.
UPLOAD_LOCK_WAIT = 30.0

# Ceilings of the contract: claims and status/log polls wait at most 50 s, lease polls 20 s
# (well below common proxy idle timeouts of 60 s).
MAX_WAIT = 50.0
MAX_LEASE_WAIT = 20.0
# A long poll's slot in a shared store outlives the poll's deadline by this much: the poll's
# last check and its answer run after the deadline, and instances' clocks differ by a little.
POLL_SLOT_GRACE = 10.0

# How often a waiting long poll looks whether its client is still connected: a poll whose
# client went away holds its thread (and its place in the token's count) at most this long.
CONNECTION_CHECK = 2.0

# gunicorn: keep idle connections of polling agents open between calls (below common proxy
# idle timeouts), and give in-flight requests a short grace on shutdown (long polls are
# simply retried by their clients).
KEEPALIVE = 55
GRACEFUL_TIMEOUT = 10

# The web console's log-in sessions: a session unused this long ends (an operator who walked
# away), and every session ends this long after its log-in whatever its use, so a stolen
# cookie is worth a working day at most.
CONSOLE_SESSION_IDLE = 30 * 60.0
CONSOLE_SESSION_MAX = 12 * 3600.0
# How much of each log the job page shows: the end of it, where the failure usually is.
CONSOLE_LOG_TAIL = 64 * 1024
# Jobs per page of the console's job list.
CONSOLE_PAGE_SIZE = 50
