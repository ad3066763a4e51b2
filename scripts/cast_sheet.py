from pathlib import Path

from facepipe.faces.cast import write_cast
from facepipe.media.integrity import read_sealed_json
from facepipe.workflow.rule_script import run


def main(sm, log):
    persons = read_sealed_json(sm.input.persons)
    write_cast(persons, Path(sm.input.faces[0]).parent, sm.output.sheet, sm.output.table)


run(snakemake, main)
