from facepipe.models.backends import make_analyzer
from facepipe.models.face_analyzer import DET_SIZE
from facepipe.faces.detection import detect_segment, look_ahead
from facepipe.workflow.rule_script import gpu_start, run
from facepipe.media.video import iter_frames, load_plan


def main(sm, log):
    degradation = gpu_start(sm)
    analyzer = make_analyzer(
        sm.params.backend,
        sm.input.detector,
        sm.input.recognizer,
        sm.params.providers,
        threads=sm.threads,
        precision="fp16" if degradation.fp16 else "fp32",
        det_size=DET_SIZE[0] // 2 if degradation.lower_resolution else DET_SIZE[0],
    )
    manifest, prepared = load_plan(sm.input.segments)
    # The next segment's first frames too: a face found there late is looked for on this one's last.
    ahead = look_ahead(analyzer, sm.params.crop, sm.params.track_gap)
    frames = iter_frames(sm.input.target, prepared, manifest, sm.wildcards.segment, threads=sm.threads, ahead=ahead)
    detect_segment(
        analyzer,
        frames,
        manifest,
        sm.wildcards.segment,
        sm.output.faces,
        sm.output.frames,
        crop=sm.params.crop,
        hold_frames=sm.params.track_gap,
        identity_every=sm.params.identity_every,
    )


run(snakemake, main)
