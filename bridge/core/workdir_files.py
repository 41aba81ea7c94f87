"""The names of the files in a job's work dir that belong to mint-bridge, all in one place.

A work dir is ``<work_base>/<job id>``; everything of ours lives in its control dir,
``<work dir>/.mint-bridge/``, which is never staged over and never returned as a result. The
site entry, the agent and every scheduler adapter write there, so their names are listed here
together: two writers can never pick the same name by accident.

Only names live here: no code that reads or writes the files (that stays with their owner), and
nothing this module imports, so the local scheduler's supervisor, which starts per job, pays
nothing for it.
"""

from __future__ import annotations

# The directory inside each work dir that holds the job's control files; never returned.
CONTROL_DIR = ".mint-bridge"

# --- the site entry's (``bridge.site.workdir``, ``bridge.site.job_start``) -------------------
REQUEST_FILE = "request.json"  # the accepted request: command, parameter values, inputs
INPUTS_FILE = "inputs.json"  # size and mtime of each staged input (unchanged ones stay)
LOCK_FILE = "lock"  # flock'd while a request stages or starts the job, so it starts once
SUBMITTING_FILE = "submitting"  # just before the submit: with no native id, maybe cut off
NATIVE_ID_FILE = "native_id"  # the scheduler's id for the job, written the moment it is known
SCHEDULER_FILE = "scheduler"  # which adapter runs the job
STDOUT_FILE = "stdout"  # the job's output, tailed live to the bridge
STDERR_FILE = "stderr"
OUTCOME_FILE = "outcome.json"  # the final outcome as the site saw it from the scheduler
CANCEL_REQUESTED_FILE = "cancel_requested"  # the bridge cancelled: a job not started never is
DELIVERED_FILE = "delivered"  # the bridge confirmed it received the results
AUDITED_FILE = "audited"  # keys of the once-only audit events already recorded
HELD_FILE = "held.json"  # a manual-release job's results wait for a site operator's decision
RELEASE_FILE = "release.json"  # the operator's decision on a held job: released or rejected

# --- the agent's (``bridge.site.pulled_job``) ----------------------------------------------
BROKER_FILE = "broker.json"  # broker URL, agent id, lease epoch, the claimed document
BROKER_COMPLETED_FILE = "broker-completed"  # the broker accepted our ``complete``

# --- the local scheduler's and its supervisor's (``schedulers.local_files``) ----------------
LOCAL_SPEC_FILE = "local-spec.json"  # what the supervisor runs
LOCAL_EXIT_FILE = "exit.json"  # how the job ended, written by the supervisor as its last act
# Written by cancel() before it signals the supervisor, so a cancel that arrives before the
# supervisor installed its signal handler is still honoured.
LOCAL_CANCEL_FILE = "local-cancel"
RUNNER_PID_FILE = "runner.pid"  # the supervisor's pid
RUNNER_LOG_FILE = "runner.log"  # the supervisor's own stdout and stderr

# --- the batch schedulers' (``schedulers.batch``) ------------------------------------------
BATCH_SCRIPT_FILE = "job.sh"
EXIT_CODE_FILE = "exit_code"  # the solver's exit code, recorded by the job script
SELF_ID_FILE = "scheduler_job_id"  # the job's id, recorded by the job script as its first act
SCHEDULER_OUTPUT_FILE = "scheduler.out"  # the script's own stdout+stderr (kill notices)
SUBMIT_LOCK_FILE = "submit.lock"  # held by a submit command, also after its submitter died
BATCH_CANCEL_FILE = "batch-cancel"  # written by cancel() just before the cancel command
