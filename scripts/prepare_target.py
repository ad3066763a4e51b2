from dataclasses import asdict

from facepipe.media.ffmpeg import probe
from facepipe.media.integrity import read_sealed_json, seal, write_sealed_json
from facepipe.media.files import atomic_output_dir
from facepipe.workflow.rule_script import run
from facepipe.media.video import plan_segments


def main(sm, log):
    info = probe(sm.input.target)
    log.info("probe: %s", info)
    # Sealed: the stages that read the probe verify it first (facepipe.media.integrity); the plan
    # is made from what they read, as written.
    write_sealed_json(sm.output.probe, asdict(info))
    probe_info = read_sealed_json(sm.output.probe)
    with atomic_output_dir(sm.output.segments) as segments:
        manifest = plan_segments(
            sm.input.target,
            probe_info,
            segments,
            max_height=sm.params.max_height,
            fps=sm.params.fps,
            segment_seconds=sm.params.segment_seconds,
            # The cores that will run the segments side by side (rules/common.smk: plan_cores).
            parallel=sm.threads,
        )
        # Sealed before the folder is moved into place, so the plan never appears unsealed.
        seal(segments / "manifest.json")
    log.info("planned %d frames in %d segments for %d core(s)%s", manifest["frames"], len(manifest["segments"]),
             manifest.get("planned_for_cores", 1),
             f" (transcoded: {manifest['transcoded_because']})" if manifest.get("transcoded_because") else "")


run(snakemake, main)
