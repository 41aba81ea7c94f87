"""The broker's SHA-256 of an upload continues across PATCH requests instead of a re-read."""

from __future__ import annotations

import hashlib

from broker.transfers import RunningDigests, UploadTarget


def _target(sha256: str = "a" * 64) -> UploadTarget:
    return UploadTarget("job-1", "inputs", "in.dat", 10, sha256)


def test_digest_continues_at_the_offset_it_was_kept_for() -> None:
    running = RunningDigests()
    first = running.take(_target(), 0)
    first.update(b"hello")
    running.keep(_target(), 5, first)
    again = running.take(_target(), 5)
    again.update(b"world")
    assert again.hexdigest() == hashlib.sha256(b"helloworld").hexdigest()


def test_unknown_offset_or_other_declaration_gives_no_digest() -> None:
    running = RunningDigests()
    digest = running.take(_target(), 0)
    digest.update(b"hello")
    running.keep(_target(), 5, digest)
    assert running.take(_target("b" * 64), 5) is None  # a re-declared file starts over
    running.keep(_target(), 5, digest)
    assert running.take(_target(), 4) is None  # offset moved: the final check re-reads
    assert running.take(_target(), 5) is None  # taken once: a stale digest is never reused
