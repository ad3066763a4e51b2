from pathlib import Path

from facepipe.media import integrity
from facepipe.media.ffmpeg import mux_video
from facepipe.workflow.rule_script import run
from facepipe.media.video import load_plan


def main(sm, log):
    segments = [Path(s) for s in sm.input.segments]
    # Every damaged segment is removed and named (not only the first), so one rerun remakes all.
    damaged = []
    for segment in segments:
        try:
            integrity.verify(segment)
        except integrity.DamagedIntermediateError as exc:
            damaged.append(str(exc))
    if damaged:
        raise integrity.DamagedIntermediateError("\n".join(damaged))
    # The segment plan: the frame count and rate the result must have.
    manifest, _ = load_plan(sm.input.plan)
    probe = integrity.read_sealed_json(sm.input.probe)
    mux_video(segments, sm.input.target, probe, sm.output.video,
              frames=sum(manifest["segments"][s.stem] for s in segments), fps=manifest["fps"],
              record=sm.params.get("record"))
    if not sm.params.keep_intermediates:
        # Snakemake removes the temporary segments themselves once this job is done.
        for segment in segments:
            integrity.unseal(segment)
    log.info("wrote %s", sm.output.video)


run(snakemake, main)
