from pathlib import Path

from facepipe.faces import roles
from facepipe.models.backends import METRICS, make_analyzer
from facepipe.report.qc import qc_report
from facepipe.workflow.rule_script import run


def main(sm, log):
    analyzer = make_analyzer(
        sm.params.backend,
        sm.input.detector,
        sm.input.recognizer,
        sm.params.providers,
        threads=sm.threads,
    )
    sources = [
        getattr(sm.input, role)
        for role in sm.input.keys()
        if roles.is_swap_source(role)
    ]
    qc_report(
        name=sm.wildcards.name,
        target=sm.input.target,
        result=sm.input.result,
        plan=sm.input.segments,
        faces_dir=Path(sm.input.faces[0]).parent,
        swapped_dir=Path(sm.input.swapped[0]).parent,
        tracks=Path(sm.input.tracks),
        persons=Path(sm.input.persons),
        embeddings=sources,
        backend=sm.params.backend,
        analyzer=analyzer,
        outputs=dict(sm.output.items()),
        threshold=METRICS[sm.params.backend].person_distance,
    )


run(snakemake, main)
