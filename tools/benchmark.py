#!/usr/bin/env python3
"""Overhead benchmark: the workflow against a plain ffmpeg transcode and an in-memory pipe.

    python tools/benchmark.py                # 60 s 1080p clip with audio
    python tools/benchmark.py --seconds 30 --height 720

It makes its own clip (insightface's group photo, slow pan/zoom, sine tone; every 10 s the last
4 s cut away to a dark shot without faces, as real footage has shots without faces; --no-cutaways
for the pan alone; --close-up for one face in close-up, where the offline swap costs most), then
times, in turn and --repeat times: a plain decode + encode with the encoder settings the workflow
uses (the floor); a FaceFusion-style in-memory pipe (an ffmpeg reader pipe, Python holding each
decoded BGR frame where a model would run, at zero model cost, an ffmpeg writer pipe, then the
original audio muxed back); the whole workflow with backend=standin (model cost near zero); and
the workflow with backend=offline (real CPU models, no download; --offline-repeat runs of it, 0
for none), all with no enhancer at native resolution. It prints every ratio (of the medians, and
each round's own), each run's peak resident memory of the largest process, each run's CPU seconds
(all its processes) and the share of the cores it kept busy, the peak disk used by the
intermediates (work/) and the offline run's seconds per stage from the rules' benchmark files.
Figures are measured on the current machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.slurmprobe import controller_unreachable, env_for_local_snakemake  # noqa: E402


def workflow_env() -> dict:
    """The environment of every timed run: this checkout's facepipe, whatever is installed."""
    env = env_for_local_snakemake()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env
WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "config", "envs", "profiles", "report"]


def _tree_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass  # files come and go while a stage runs
    return total


class Sampler:
    """Samples the largest single process RSS below a parent and the size of a folder."""

    def __init__(self, pid: int, folder: Path | None = None, interval: float = 0.25, include_self: bool = False):
        import psutil

        self.parent = psutil.Process(pid)
        self.include_self = include_self
        self.folder = folder
        self.interval = interval
        self.peak_rss = 0
        self.peak_rss_cmd = ""
        self.peak_disk = 0
        self.cpu_seconds = 0.0  # set by timed() once the process has ended
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = self.parent.children(recursive=True)
            except psutil.Error:
                procs = []
            if self.include_self:
                procs.append(self.parent)
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if rss > self.peak_rss:
                        self.peak_rss = rss
                        self.peak_rss_cmd = " ".join(p.cmdline()[:4])[:100]
                except psutil.Error:
                    pass
            if self.folder is not None and self.folder.exists():
                self.peak_disk = max(self.peak_disk, _tree_size(self.folder))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


CUTAWAY_EVERY = 10  # seconds: the last CUTAWAY_LENGTH of every CUTAWAY_EVERY is a shot without faces
CUTAWAY_LENGTH = 4
# A keyframe at least every this many frames (2 s), as camera and phone recordings have them every
# second or two; x264's default (250 frames) left whole shots without faces inside groups of
# pictures that also hold faces, which a real recording seldom does (copy_unswapped).
KEYFRAME_EVERY = 50


def make_clip(out: Path, seconds: float, height: int, cutaways: bool = True, close_up: Path | None = None) -> None:
    from facepipe.media import demo
    from facepipe.media.ffmpeg import run_ffmpeg

    width = round(height * 16 / 9 / 2) * 2
    if close_up is not None:
        # One face about a fifth of the frame wide (about 400 px at 1080p), as in an interview or a
        # vlog: the photo's top left (its face and shoulders) at 16:9, in a slow zoom.
        frames = max(1, round(seconds * 25))
        run_ffmpeg(["-loop", "1", "-framerate", "25", "-i", str(close_up),
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                    "-filter_complex", f"[0:v]crop=iw*0.89:ih/2:0:0,scale={width * 2}:-2,"
                    f"zoompan=z='1+0.1*on/{frames}':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d=1:"
                    f"s={width}x{height}:fps=25,scale=out_range=tv,format=yuv420p[v]",
                    "-map", "[v]", "-map", "1:a", "-frames:v", str(frames), "-c:v", "libx264", "-preset",
                    "veryfast", "-crf", "20", "-g", str(KEYFRAME_EVERY), "-c:a", "aac", "-t", str(frames / 25),
                    str(out)],
                   what=f"making clip {out.name}")
        return
    if not cutaways:
        demo.make_clip(demo.insightface_image("t1.jpg"), out, seconds=seconds, fps=25, size=(width, height),
                       zoom=0.1)
        return
    fps, frames = 25, max(1, round(seconds * 25))
    # The group photo's pan/zoom, cut every 10 s to a dark, grainy grey shot without faces: the
    # stand-in detector scores a frame's spread of values (colour too), so the shot is a neutral
    # grey and nearly flat, where it finds no face; the real detectors find none in grain either.
    pan = (f"[0:v]scale={width * 2}:-2,zoompan=z='1+0.1*on/{frames}':x='iw/2-(iw/zoom/2)':"
           f"y='ih/2-(ih/zoom/2)':d=1:s={width}x{height}:fps={fps},scale=out_range=tv,format=yuv420p[pan]")
    dark = "[2:v]noise=alls=3:allf=t,format=yuv420p[dark]"
    cut = (f"[pan][dark]overlay=enable='gte(mod(t,{CUTAWAY_EVERY}),{CUTAWAY_EVERY - CUTAWAY_LENGTH})',"
           f"format=yuv420p[v]")
    run_ffmpeg(["-loop", "1", "-framerate", str(fps), "-i", str(demo.insightface_image("t1.jpg")),
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
                "-f", "lavfi", "-i", f"color=c=0x181818:s={width}x{height}:r={fps}",
                "-filter_complex", ";".join([pan, dark, cut]), "-map", "[v]", "-map", "1:a",
                "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                "-g", str(KEYFRAME_EVERY), "-c:a", "aac", "-t", str(frames / fps), str(out)],
               what=f"making clip {out.name}")


def pipe_worker(clip: str, out: str, encoder: str, preset: str, crf: str) -> int:
    """The in-memory pipe's process: ffmpeg decodes to raw BGR frames on a pipe, Python holds each
    frame as an array (where a model would run; here it costs nothing), ffmpeg encodes them from a
    pipe, then the clip's audio is muxed back with the new video, both stream-copied."""
    import av
    import numpy as np

    from facepipe.media.ffmpeg import ffmpeg_exe

    with av.open(clip) as container:
        stream = container.streams.video[0]
        w, h, rate = stream.codec_context.width, stream.codec_context.height, str(stream.average_rate)
    ff = ffmpeg_exe()
    video_only = str(Path(out).with_suffix(".video.mp4"))
    reader = subprocess.Popen([ff, "-hide_banner", "-loglevel", "error", "-i", clip, "-map", "0:v:0",
                               "-f", "rawvideo", "-pix_fmt", "bgr24", "-"], stdout=subprocess.PIPE)
    writer = subprocess.Popen([ff, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt",
                               "bgr24", "-s", f"{w}x{h}", "-r", rate, "-i", "-", "-c:v", encoder, "-preset",
                               preset, "-crf", crf, "-pix_fmt", "yuv420p", video_only], stdin=subprocess.PIPE)
    size = w * h * 3
    frames = 0
    while True:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = reader.stdout.readinto(view[got:])
            if not n:
                break
            got += n
        if got < size:
            break
        frame = np.frombuffer(buf, np.uint8).reshape(h, w, 3)  # a model would run on this frame
        writer.stdin.write(frame.data)
        frames += 1
    writer.stdin.close()
    if reader.wait() or writer.wait():
        raise SystemExit("the pipe's ffmpeg failed")
    subprocess.run([ff, "-hide_banner", "-loglevel", "error", "-y", "-i", video_only, "-i", clip, "-map", "0:v",
                    "-map", "1:a?", "-c", "copy", "-shortest", out], check=True)
    Path(video_only).unlink()
    print(f"{frames} frames")
    return 0


def in_memory_pipe(clip: Path, out: Path, config: dict) -> tuple[float, Sampler]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--pipe-worker", str(clip), str(out), config["encoder"],
           str(config["preset"]), str(config["crf"])]
    return timed(cmd, "the in-memory pipe failed", stdout=subprocess.DEVNULL, env=workflow_env())


def _children_cpu() -> float:
    """CPU seconds (user and system) of this process's finished, waited-for descendants so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], failed: str, *, work: Path | None = None, **popen) -> tuple[float, Sampler]:
    """Run cmd, sampling its memory (and work/'s disk use), and return its wall time and the sampler,
    which also carries the CPU seconds of cmd and every process under it (Snakemake waits for its
    jobs, and they for their ffmpeg, so theirs count too)."""
    cpu_before = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, **popen)
    with (Sampler(proc.pid, work) if work else Sampler(proc.pid, include_self=True)) as sampler:
        rc = proc.wait()
    elapsed = time.perf_counter() - start
    sampler.cpu_seconds = _children_cpu() - cpu_before
    if rc != 0:
        raise SystemExit(f"{failed} (exit {rc})")
    return elapsed, sampler


def plain_transcode(clip: Path, out: Path, config: dict) -> tuple[float, Sampler]:
    from facepipe.media.ffmpeg import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c:v", config["encoder"],
           "-preset", str(config["preset"]), "-crf", str(config["crf"]), "-pix_fmt", "yuv420p", "-c:a", "copy",
           str(out)]
    return timed(cmd, "the plain transcode failed")


def run_workflow(wd: Path, clip: Path, source: Path, extra: list[str], backend: str = "standin"
                 ) -> tuple[float, Sampler]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "all", "--quiet", "all", "--config", f"target={clip}",
           f"source={source}", "name=bench", f"backend={backend}", "enhancer=none", "max_height=0", "fps=0", *extra]
    return timed(cmd, f"workflow failed; see {wd}/logs", work=wd / "work", cwd=wd, env=workflow_env())


def _spread(times: list[float]) -> str:
    return f"  (runs: {', '.join(f'{t:.1f}' for t in times)})" if len(times) > 1 else ""


def stage_times(wd: Path, name: str) -> dict[str, list[float]]:
    """Seconds per job of each rule, from the rules' benchmark files (benchmarks/{name}/...)."""
    import csv

    times: dict[str, list[float]] = {}
    folder = wd / "benchmarks" / name
    for tsv in sorted(folder.rglob("*.tsv")):
        rule = tsv.parent.name if tsv.parent != folder else tsv.stem
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            times.setdefault(rule, []).append(float(rows[-1]["s"]))
    return times


def clear_outputs(wd: Path, name: str) -> None:
    """Remove a finished run's result and intermediates (not the models, the source embedding with
    its seal, or the job's stage stamps, which say what the embedding was made from)."""
    shutil.rmtree(wd / "results", ignore_errors=True)
    shutil.rmtree(wd / "benchmarks" / name, ignore_errors=True)
    keep = {"source_embedding.npz", "source_embedding.npz.sha256", "stamps"}
    for p in (wd / "work" / name).iterdir():
        if p.name not in keep:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def fresh_workflow(wd: Path) -> Path:
    """A clean copy of the workflow to run in."""
    if wd.exists():
        shutil.rmtree(wd)
    wd.mkdir(parents=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, wd / part)
    return wd


def tiny_clip(out: Path, seconds: float) -> Path:
    """A long clip at a tiny size: scheduling figures depend on the number of segments, not pixels."""
    from facepipe.media.ffmpeg import run_ffmpeg

    if not out.exists():
        run_ffmpeg(["-f", "lavfi", "-i", f"testsrc2=size=64x36:rate=25:duration={seconds}", "-f", "lavfi",
                    "-i", f"sine=frequency=440:sample_rate=8000:duration={seconds}", "-c:v", "libx264",
                    "-preset", "ultrafast", "-g", "250", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                    str(out)], what="making a tiny clip")
    return out


def timed_snakemake(wd: Path, *args: str) -> float:
    cmd = [sys.executable, "-m", "snakemake", *args, "--cores", "all", "--quiet", "all"]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=wd, check=True, env=workflow_env(), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def scheduling(base: Path, source: Path) -> None:
    """`snakemake -n` for a one-hour job (after its checkpoint) and a no-op rerun of a ten-minute job."""
    for label, seconds in (("one-hour", 3600), ("ten-minute", 600)):
        wd = fresh_workflow(base / f"sched_{seconds}")
        clip = tiny_clip(base / f"tiny_{seconds}s.mp4", seconds)
        config = ["--config", f"target={clip}", f"source={source}", f"name=t{seconds}", "backend=standin"]
        if seconds == 3600:
            timed_snakemake(wd, f"work/t{seconds}/segments", *config)
            took = timed_snakemake(wd, "--dry-run", *config)
            print(f"{'snakemake -n, one-hour job (after its plan)':45s} {took:8.1f} s")
        else:
            print(f"running the {label} job once (tiny frames) ...", flush=True)
            timed_snakemake(wd, *config)
            took = timed_snakemake(wd, *config)
            print(f"{'no-op rerun, ten-minute job':45s} {took:8.1f} s")


def _median_line(label: str, times: list[float]) -> str:
    return f"{label:45s} {statistics.median(times):8.1f} s" + _spread(times)


def _ratio_line(label: str, numerators: list[float], denominators: list[float]) -> str:
    """The ratio of the medians, then each round's own: a round's runs follow each other within
    minutes, so the machine's drift from round to round cancels in them."""
    ratio = statistics.median(numerators) / statistics.median(denominators)
    rounds = [n / d for n, d in zip(numerators, denominators)]
    each = f"  (rounds: {', '.join(f'{r:.2f}' for r in rounds)})" if len(rounds) > 1 else ""
    return f"{label:45s} {ratio:8.2f}{each}"


def _rss(samplers: list[Sampler]) -> str:
    peak = max(samplers, key=lambda s: s.peak_rss)
    return f"{peak.peak_rss / 2**20:8.0f} MiB  ({peak.peak_rss_cmd})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--pipe-worker"]:
        return pipe_worker(*argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="clip length (default 60)")
    ap.add_argument("--height", type=int, default=1080, help="clip height (default 1080)")
    ap.add_argument("--workdir", type=Path, help="where to work (default: a temporary folder)")
    ap.add_argument("--config", nargs="*", default=[], help="extra --config key=value for the workflow")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate the floor, the pipe and the workflow this many times; medians are reported")
    ap.add_argument("--offline-repeat", type=int, default=None,
                    help="runs of the workflow with backend=offline, in the same rounds (default: --repeat; "
                         "0: none)")
    ap.add_argument("--no-pipe", action="store_true", help="do not time the in-memory pipe")
    ap.add_argument("--close-up", action="store_true",
                    help="a clip of one face in close-up (the astronaut photo, its face about 400 px wide at "
                         "1080p) instead of the group photo: the offline swap's cost grows with a face's size")
    ap.add_argument("--no-cutaways", action="store_true",
                    help="the clip without its shots without faces (the pan/zoom of the group photo only)")
    ap.add_argument("--scheduling", action="store_true",
                    help="also time `snakemake -n` for a one-hour job and a no-op rerun of a ten-minute job")
    args = ap.parse_args(argv)
    offline_repeat = args.repeat if args.offline_repeat is None else args.offline_repeat

    import yaml

    from facepipe.media.demo import insightface_image, write_astronaut

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base = args.workdir or Path(tempfile.mkdtemp(prefix="facepipe-bench-"))
    wd = fresh_workflow(base / "workflow")
    wd_offline = fresh_workflow(base / "workflow_offline") if offline_repeat else None
    kind = "closeup" if args.close_up else "pan" if args.no_cutaways else "cuts"
    clip = base / f"clip_{args.height}p_{args.seconds:g}s_{kind}.mp4"
    astronaut = write_astronaut(base / "source.png")
    if not clip.exists():
        print(f"making {clip.name} ...", flush=True)
        make_clip(clip, args.seconds, args.height, cutaways=not args.no_cutaways,
                  close_up=astronaut if args.close_up else None)
    # The close-up's face is the astronaut's: another face swaps onto it (the group photo's largest).
    source = insightface_image("t1.jpg") if args.close_up else astronaut
    # Models and the source embedding are made once up front: they are not per-video work.
    prepare = ["--cores", "all", "--quiet", "all", "--config", f"target={clip}", f"source={source}", "name=bench"]
    subprocess.run([sys.executable, "-m", "snakemake", "work/bench/source_embedding.npz",
                    "resources/models/standin/inswapper_128_batched.onnx", *prepare, "backend=standin"],
                   cwd=wd, check=True, env=workflow_env())
    if wd_offline:
        subprocess.run([sys.executable, "-m", "snakemake", "work/bench/source_embedding.npz", *prepare,
                        "backend=offline"], cwd=wd_offline, check=True, env=workflow_env())

    # Alternating runs, medians reported: shared machines drift by 10-20% within minutes.
    plains, pipes, runs, offline, stages = [], [], [], [], {}
    for i in range(max(args.repeat, offline_repeat)):
        if i < args.repeat:
            plains.append(plain_transcode(clip, base / "plain.mp4", config))
            if not args.no_pipe:
                pipes.append(in_memory_pipe(clip, base / "pipe.mp4", config))
            if i:
                clear_outputs(wd, "bench")
            runs.append(run_workflow(wd, clip, source, args.config))
        if i < offline_repeat:
            if i:
                clear_outputs(wd_offline, "bench")
            offline.append(run_workflow(wd_offline, clip, source, args.config, backend="offline"))
            for rule, times in stage_times(wd_offline, "bench").items():
                stages.setdefault(rule, []).append(times)
        # Each round as it ends, so a run cut short still says what it measured.
        done = [(label, runs_[i][0]) for label, runs_ in (("floor", plains), ("pipe", pipes), ("standin", runs),
                                                           ("offline", offline)) if i < len(runs_)]
        print(f"round {i + 1}: " + ", ".join(f"{label} {t:.1f} s" for label, t in done), flush=True)
    peak_disk = max(s.peak_disk for _, s in runs)
    minutes = args.seconds / 60
    print()
    print(f"clip: {args.height}p, {args.seconds:g} s"
          + (", one face in close-up" if args.close_up else "" if args.no_cutaways
             else f", faces absent {CUTAWAY_LENGTH} s of every {CUTAWAY_EVERY} s")
          + f"; encoder {config['encoder']} preset {config['preset']} crf {config['crf']}"
          + (f"; medians of {args.repeat} alternating runs" if args.repeat > 1 else ""))
    print(_median_line("plain ffmpeg decode+encode (floor)", [t for t, _ in plains]))
    if pipes:
        print(_median_line("in-memory pipe, zero-cost model", [t for t, _ in pipes]))
    print(_median_line("workflow, backend=standin, no enhancer", [t for t, _ in runs]))
    if offline:
        print(_median_line("workflow, backend=offline, no enhancer", [t for t, _ in offline]))
    floor_t, pipe_t, standin_t, offline_t = ([t for t, _ in runs_] for runs_ in (plains, pipes, runs, offline))
    if pipes:
        print(_ratio_line("ratio pipe / floor", pipe_t, floor_t))
    print(_ratio_line("ratio workflow / plain", standin_t, floor_t))
    if pipes:
        print(_ratio_line("ratio workflow / pipe", standin_t, pipe_t))
    if offline:
        print(_ratio_line("ratio offline workflow / floor", offline_t, floor_t))
        if pipes:
            print(_ratio_line("ratio offline workflow / pipe", offline_t, pipe_t))
    print("peak RSS of the largest process:")
    print(f"{'  floor':45s} {_rss([s for _, s in plains])}")
    if pipes:
        print(f"{'  in-memory pipe':45s} {_rss([s for _, s in pipes])}")
    print(f"{'  workflow, standin (largest job)':45s} {_rss([s for _, s in runs])}")
    if offline:
        print(f"{'  workflow, offline (largest job)':45s} {_rss([s for _, s in offline])}")
    # How much of the machine each run kept busy: a run that takes as long as another while using
    # less CPU waits somewhere (a serial stage, a job's start), one that uses more does more work.
    cores = os.cpu_count() or 1
    print(f"CPU seconds of all a run's processes (median), and the share of the {cores} cores busy over its wall time:")
    for label, timed_runs in (("floor", plains), ("in-memory pipe", pipes), ("workflow, standin", runs),
                              ("workflow, offline", offline)):
        if timed_runs:
            cpu = statistics.median(s.cpu_seconds for _, s in timed_runs)
            busy = statistics.median(s.cpu_seconds / (t * cores) for t, s in timed_runs)
            print(f"  {label:43s} {cpu:8.1f} s  ({busy:.0%} busy)")
    print(f"{'peak disk of intermediates (work/), standin':45s} {peak_disk / 2**30:8.2f} GiB "
          f"({peak_disk / 2**30 / minutes:.2f} GiB per minute of video)")
    if stages:
        print("offline run, seconds per stage (sum over its segments' jobs; median over runs; from benchmarks/):")
        for rule, per_run in stages.items():
            sums = [sum(t) for t in per_run]
            jobs = ", ".join(f"{t:.1f}" for t in per_run[len(per_run) // 2])
            print(f"  {rule:43s} {statistics.median(sums):8.1f} s  (jobs: {jobs})")
    if args.scheduling:
        scheduling(base, source)
    if controller_unreachable():
        print("note: this machine has a SLURM client but no reachable controller; the SLURM plugin's 10 s probe "
              "at each snakemake start was skipped (slurmprobe)")
    print(f"workdir: {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
