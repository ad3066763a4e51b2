"""Face-swap workflow library: everything the Snakemake rules call."""
