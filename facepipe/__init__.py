"""Face-swap workflow library: everything the Snakemake rules call, one subpackage per concern,
each floor importing only the floors below it:

1. ``media``: media I/O (ffmpeg, video segments, images, tables, seals, face patches);
   ``gpu`` (GPU memory: watched, and a job degraded instead of dying) and ``progress`` (progress
   lines) stand beside it at the root, because every floor above uses them;
2. ``models``: every analyzer and swap, the model registry and the router;
3. ``faces``: faces over time (detection rows, tracking, selection, the cast, the source embedding);
4. ``swap``: the swap stage, its masks and enhancement; ``report``: preview and QC;
   ``workflow``: jobs, provenance, preflight, locks and the glue of every rule script.
"""

import sys as _sys

# In a rule script (Snakemake runs it as __main__, with a `snakemake` object there), whichever
# facepipe module it imports first: from here on, an exception nothing catches (a broken import
# included) puts its traceback into the rule's log (facepipe.workflow.rule_script).
if hasattr(_sys.modules.get("__main__"), "snakemake"):
    # lazy: imported only on the path that needs it
    import facepipe.workflow.rule_script  # noqa: F401
