"""Faces over time: detection rows per segment, tracks through the video, which persons are
swapped, the cast sheet, and the source's cached identity embedding.

- ``detection``: the faces table (one row per face and frame) from a backend's analyzer;
- ``boxes``: a face box's area and two boxes' overlap (detection, the analyzers, tracking);
- ``tracking``: faces followed through the whole video, shot cuts, persons;
- ``selection``: which persons a job swaps (one, many, a map of source to reference);
- ``cast``: the cast sheet, one thumbnail per person;
- ``embedding``: the source's (or a reference's) identity embedding, cached as an artifact.
"""
