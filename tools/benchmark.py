#!/usr/bin/env python3
"""Overhead benchmark: the workflow against a plain ffmpeg transcode of the same clip.

    python tools/benchmark.py                # 60 s 1080p clip with audio
    python tools/benchmark.py --seconds 30 --height 720

It makes its own clip (insightface's group photo, slow pan/zoom, sine tone), then prints side
by side: a plain decode + encode with the encoder settings the workflow uses (the floor), the
whole workflow with backend=standin (model cost near zero), no enhancer, native resolution,
their ratio, the peak resident memory of the largest job and the peak disk used by the
intermediates (work/). Figures are measured on the current machine; nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout's tools package
from tools.slurmprobe import controller_unreachable, env_for_local_snakemake  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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

    def __init__(self, pid: int, folder: Path, interval: float = 0.25):
        import psutil

        self.parent = psutil.Process(pid)
        self.folder = folder
        self.interval = interval
        self.peak_rss = 0
        self.peak_rss_cmd = ""
        self.peak_disk = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = self.parent.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if rss > self.peak_rss:
                        self.peak_rss = rss
                        self.peak_rss_cmd = " ".join(p.cmdline()[:4])[:100]
                except psutil.Error:
                    pass
            if self.folder.exists():
                self.peak_disk = max(self.peak_disk, _tree_size(self.folder))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def make_clip(out: Path, seconds: float, height: int) -> None:
    from facepipe.media import demo

    width = round(height * 16 / 9 / 2) * 2
    demo.make_clip(demo.insightface_image("t1.jpg"), out, seconds=seconds, fps=25, size=(width, height),
                   zoom=0.1)


def plain_transcode(clip: Path, out: Path, config: dict) -> float:
    from facepipe.media.ffmpeg import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c:v", config["encoder"],
           "-preset", str(config["preset"]), "-crf", str(config["crf"]), "-pix_fmt", "yuv420p", "-c:a", "copy",
           str(out)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def run_workflow(wd: Path, clip: Path, source: Path, extra: list[str]) -> tuple[float, Sampler]:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "all", "--quiet", "all", "--config", f"target={clip}",
           f"source={source}", "name=bench", "backend=standin", "enhancer=none", "max_height=0", "fps=0", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=wd, env=env_for_local_snakemake())
    with Sampler(proc.pid, wd / "work") as sampler:
        rc = proc.wait()
    elapsed = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"workflow failed (exit {rc}); see {wd}/logs")
    return elapsed, sampler


def _spread(times: list[float]) -> str:
    return f"  (runs: {', '.join(f'{t:.1f}' for t in times)})" if len(times) > 1 else ""


def clear_outputs(wd: Path, name: str) -> None:
    """Remove a finished run's result and intermediates (not the models, the source embedding with
    its seal, or the job's stage stamps, which say what the embedding was made from)."""
    shutil.rmtree(wd / "results", ignore_errors=True)
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
    subprocess.run(cmd, cwd=wd, check=True, env=env_for_local_snakemake(), stdout=subprocess.DEVNULL,
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="clip length (default 60)")
    ap.add_argument("--height", type=int, default=1080, help="clip height (default 1080)")
    ap.add_argument("--workdir", type=Path, help="where to work (default: a temporary folder)")
    ap.add_argument("--config", nargs="*", default=[], help="extra --config key=value for the workflow")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternate the floor and the workflow this many times; medians are reported")
    ap.add_argument("--scheduling", action="store_true",
                    help="also time `snakemake -n` for a one-hour job and a no-op rerun of a ten-minute job")
    args = ap.parse_args(argv)

    import yaml

    from facepipe.media.demo import write_astronaut

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    base = args.workdir or Path(tempfile.mkdtemp(prefix="facepipe-bench-"))
    wd = fresh_workflow(base / "workflow")
    clip = base / f"clip_{args.height}p_{args.seconds:g}s.mp4"
    if not clip.exists():
        print(f"making {clip.name} ...", flush=True)
        make_clip(clip, args.seconds, args.height)
    source = write_astronaut(base / "source.png")
    # Models and the source embedding are made once up front: they are not per-video work.
    subprocess.run([sys.executable, "-m", "snakemake", "work/bench/source_embedding.npz",
                    "resources/models/standin/inswapper_128_batched.onnx", "--cores", "all",
                    "--quiet", "all", "--config", f"target={clip}", f"source={source}", "name=bench",
                    "backend=standin"], cwd=wd, check=True, env=env_for_local_snakemake())

    # Alternating runs, medians reported: shared machines drift by 10-20% within minutes.
    plains, runs = [], []
    for i in range(args.repeat):
        plains.append(plain_transcode(clip, base / "plain.mp4", config))
        if i:
            clear_outputs(wd, "bench")
        runs.append(run_workflow(wd, clip, source, args.config))
    plain = statistics.median(plains)
    elapsed = statistics.median(t for t, _ in runs)
    sampler = max((s for _, s in runs), key=lambda s: s.peak_rss)
    peak_disk = max(s.peak_disk for _, s in runs)
    minutes = args.seconds / 60
    print()
    print(f"clip: {args.height}p, {args.seconds:g} s, encoder {config['encoder']} preset {config['preset']} "
          f"crf {config['crf']}" + (f"; medians of {args.repeat} alternating runs" if args.repeat > 1 else ""))
    print(f"{'plain ffmpeg decode+encode (floor)':45s} {plain:8.1f} s" + _spread(plains))
    print(f"{'workflow, backend=standin, no enhancer':45s} {elapsed:8.1f} s" + _spread([t for t, _ in runs]))
    print(f"{'ratio workflow / plain':45s} {elapsed / plain:8.2f}")
    print(f"{'peak RSS of the largest job':45s} {sampler.peak_rss / 2**20:8.0f} MiB  ({sampler.peak_rss_cmd})")
    print(f"{'peak disk of intermediates (work/)':45s} {peak_disk / 2**30:8.2f} GiB "
          f"({peak_disk / 2**30 / minutes:.2f} GiB per minute of video)")
    if args.scheduling:
        scheduling(base, source)
    if controller_unreachable():
        print("note: this machine has a SLURM client but no reachable controller; the SLURM plugin's 10 s probe "
              "at each snakemake start was skipped (slurmprobe)")
    print(f"workdir: {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
