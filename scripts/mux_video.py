from facepipe.media import mux_video, read_json
from facepipe.scripting import run


def main(sm, log):
    mux_video(list(sm.input.segments), sm.input.target, read_json(sm.input.probe), sm.output.video)
    log.info("wrote %s", sm.output.video)


run(snakemake, main)
