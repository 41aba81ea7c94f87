"""How a site runs a job: one module per scheduler over the small contract in ``base``."""

from __future__ import annotations

from schedulers.base import JobHandle, JobSpec, Scheduler


def get_scheduler(name: str) -> Scheduler:
    """The adapter for a scheduler name from a site's config."""
    if name == "local":
        from schedulers.local import LocalScheduler

        return LocalScheduler()
    raise ValueError(f"scheduler {name!r} is not available; use 'local'")


__all__ = ["JobHandle", "JobSpec", "Scheduler", "get_scheduler"]
