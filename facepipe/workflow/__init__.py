"""Workflow plumbing, the top floor: everything between Snakemake and the stages.

- ``jobs``: the jobs sheet, config defaults and command-line overrides, one job per row;
- ``provenance``: the record in each result, stage stamps and code versions (what reruns);
- ``preflight``: the checks made before any job runs, each failing in one line;
- ``locks``: one run at a time per folder, safe after a hard kill;
- ``rule_script``: the glue every rule script runs in (logging, failures, retries);
- ``disk_space``: a full disk told clearly, and temporaries removed after a failure.
"""
