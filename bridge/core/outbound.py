"""Words that leave the site (exit reasons, skip reasons): never a site path, never unbounded.

A reason is built at the site from things the site owns: an OSError names the program's path,
a scheduler's message names spool and work directories. The bridge and the broker must not
learn any of them, so every reason passes ``scrub`` on its way out (``JobOutcome.to_message``
and the result manifest), and code that builds a reason from an OSError uses ``os_error``,
which never includes the file name in the first place.
"""

from __future__ import annotations

import errno
import re

MAX_REASON = 2000
SITE_PATH = "<site path>"

# An absolute or home-relative path: "/" or "~/" not preceded by a word character (so "a/b",
# a name inside the work dir, and "text/plain" stay), up to whitespace or a quote.
_PATH = re.compile(r"(?<![\w.~/-])~?/[^\s'\"`,;:()<>\[\]{}]*")


def scrub(reason: str) -> str:
    """``reason`` with every site path replaced by ``<site path>``, cut to ``MAX_REASON``."""
    # Cut first (with room) so a 1 MiB reason never costs a 1 MiB regex pass.
    cleaned = _PATH.sub(SITE_PATH, reason[: MAX_REASON * 2])
    return cleaned if len(cleaned) <= MAX_REASON else cleaned[: MAX_REASON - 3] + "..."


def os_error(exc: OSError) -> str:
    """An OSError in words without its file names: ``argument list too long (E2BIG)``."""
    name = errno.errorcode.get(exc.errno or 0, "")
    words = (exc.strerror or type(exc).__name__).lower()
    return f"{words} ({name})" if name else words
