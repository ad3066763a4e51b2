"""Opening a media file for its streams and packets only, not its pictures.

PyAV's ``av.open`` runs FFmpeg's stream probe (avformat_find_stream_info), which decodes the
first frames of every stream to learn what the container does not say: 18-27 ms an open of a
1080p H.264 MP4 on a 2-core machine. Several reads on every run's serial path need none of it: the
preflight lists a target's streams, and the mux reads its segments' codec records and counts the
result's packets; the render's copy of the target's faceless groups of pictures demuxes packets
too. Opened with the decoders told to skip every frame, the probe decodes no picture (1-3 ms).

What only a decoded picture tells is then unset (pixel format, colour range, a guessed
duration), and so is the decode delay FFmpeg guesses from the first pictures, from which it
fills in the times a container leaves out (Matroska's decode times, AVI's presentation times).
So beyond the list of streams this is only for MP4/MOV files, whose packets carry both times
(the workflow's own segments and results, a target the render copies from): their codec records,
time bases and packets are exactly what ``av.open`` gives (tests/test_media.py). Anything else
opens the file with ``av.open`` itself.

A module of its own, with no facepipe imports: the preflight runs in Snakemake's own process.
"""

from __future__ import annotations

from pathlib import Path


def open_packets(path: str | Path):
    """``av.open(path)`` for a file's list of streams, or for an MP4/MOV file's codec records and
    packets (see the module's description)."""
    # lazy: PyAV is slow to import, and only this path needs it
    import av

    return av.open(str(path), options={"skip_frame": "all"})
