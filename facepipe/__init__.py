"""Face-swap workflow library: everything the Snakemake rules call."""

import sys as _sys

# In a rule script (Snakemake runs it as __main__, with a `snakemake` object there), whichever
# facepipe module it imports first: from here on, an exception nothing catches (a broken import
# included) puts its traceback into the rule's log (facepipe.workflow.rule_script).
if hasattr(_sys.modules.get("__main__"), "snakemake"):
    import facepipe.workflow.rule_script  # noqa: F401
