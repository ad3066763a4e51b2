from facepipe.faces import FaceAnalyzer, detect_frames, write_faces
from facepipe.scripting import run


def main(sm, log):
    analyzer = FaceAnalyzer(sm.input.detector, sm.input.recognizer, sm.params.providers, threads=sm.threads)
    write_faces(detect_frames(analyzer, sm.input.frames), sm.output.faces)


run(snakemake, main)
