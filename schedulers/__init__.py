"""How a site runs a job: one module per scheduler over the small contract in ``base``.

local    a detached supervisor process on the site machine (schedulers.local)
slurm    sbatch / squeue / sacct / scontrol / scancel (schedulers.slurm)
torque   qsub / qstat -f -1 / qdel of Torque (schedulers.torque)
pbspro   qsub / qstat -x -f -F json / qdel of PBS Pro and OpenPBS (schedulers.pbspro)
"""

from __future__ import annotations

import importlib

from schedulers.base import JobHandle, JobSpec, Resources, Scheduler, SchedulerOptions

_ADAPTERS = {
    "local": ("schedulers.local", "LocalScheduler"),
    "slurm": ("schedulers.slurm", "SlurmScheduler"),
    "torque": ("schedulers.torque", "TorqueScheduler"),
    "pbspro": ("schedulers.pbspro", "PbsProScheduler"),
}
NAMES = tuple(_ADAPTERS)


def get_scheduler(name: str, options: SchedulerOptions | None = None) -> Scheduler:
    """The adapter for a scheduler name from a site's config."""
    if name not in _ADAPTERS:
        raise ValueError(f"scheduler {name!r} is not one of {', '.join(NAMES)}")
    module_name, class_name = _ADAPTERS[name]
    adapter: Scheduler = getattr(importlib.import_module(module_name), class_name)()
    adapter.configure(options or SchedulerOptions())
    return adapter


__all__ = [
    "NAMES",
    "JobHandle",
    "JobSpec",
    "Resources",
    "Scheduler",
    "SchedulerOptions",
    "get_scheduler",
]
