from facepipe.faces import DET_SIZE, FaceAnalyzer, detect_frames, write_faces
from facepipe.scripting import gpu_start, run


def main(sm, log):
    degradation = gpu_start(sm)
    analyzer = FaceAnalyzer(
        sm.input.detector,
        sm.input.recognizer,
        sm.params.providers,
        threads=sm.threads,
        precision="fp16" if degradation.fp16 else "fp32",
        det_size=DET_SIZE[0] // 2 if degradation.lower_resolution else DET_SIZE[0],
    )
    write_faces(detect_frames(analyzer, sm.input.frames), sm.output.faces)


run(snakemake, main)
