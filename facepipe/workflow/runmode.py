"""What the process that reads the Snakefile is for, told by Snakemake's own API (never by argv).

Every `snakemake` invocation reads the workflow: a run, a dry run, `--lint`, `--report`, `--dag`,
and each job's own process (a cluster job; locally a `run:` job). Only the main process of a run
may check, probe or write anything, and only once it plans (rules/common.smk: plan_job); the
others must read the workflow without side effects.

What Snakemake 9 tells, and when (snakemake/api.py, workflow.py):

- `workflow.is_main_process` (exec_mode DEFAULT) is False in a job's own process (exec_mode
  SUBPROCESS or REMOTE), already while the Snakefile is read.
- `workflow.executor_plugin` is set by `Workflow.execute`, i.e. only for a run or a dry run, and
  only after the Snakefile was read, just before the job graph is built. `workflow.dryrun` is
  read from it (False while it is unset, so it means nothing while the Snakefile is read).
- `workflow.dag_settings` is set once the Snakefile was read, for every command that builds a job
  graph (run, dry run, --report, --dag, --summary, ...); --lint and --list-rules never set it.

So while the Snakefile is read a run cannot be told from a dry run, --lint or --report: nothing
that depends on it may happen then. Input functions run while the graph is built, when it can.
"""

from __future__ import annotations

import threading

# A job's own process: it runs one job of a plan the main process made.
JOB = "job"
# The main process of a run (also --touch): it checks, probes and writes stamps while it plans.
RUN = "run"
# The main process of a dry run: it checks what it can without writing or starting a process.
DRY_RUN = "dry-run"
# A job graph without execution (--report, --dag, --rulegraph, --summary, ...): reads only.
GRAPH_ONLY = "graph-only"
# Reading the Snakefile, or a command that never builds a graph (--lint, --list-rules).
READING = "reading"


def run_mode(workflow) -> str:
    """One of JOB, RUN, DRY_RUN, GRAPH_ONLY, READING (see the module's docstring)."""
    if not workflow.is_main_process:
        return JOB
    if workflow.executor_plugin is not None:
        return DRY_RUN if workflow.dryrun else RUN
    if getattr(workflow, "dag_settings", None) is not None:
        return GRAPH_ONLY
    return READING


def timers_of(owner) -> list:
    """The live threading.Timer threads whose function belongs to `owner`: a bound method of it, or
    a function that closes over it (as Snakemake's JobScheduler._schedule_reevalutation starts
    `threading.Timer(delay, lambda: self._open_jobs.release())`). Other timers are not listed."""

    found = []
    for thread in threading.enumerate():
        if not isinstance(thread, threading.Timer):
            continue
        function = thread.function
        owners = [getattr(function, "__self__", None)]
        for cell in getattr(function, "__closure__", None) or ():
            try:
                owners.append(cell.cell_contents)
            except ValueError:  # an empty cell
                pass
        if any(o is owner for o in owners):
            found.append(thread)
    return found
