"""Media I/O, the bottom floor: what goes in and out of files, and nothing about faces.

- ``files``: JSON, atomic writers, images and PNG labels (the AI-generated label included);
- ``ffmpeg``: running ffmpeg, probing the target with PyAV, muxing the result and its record;
- ``video``: segment plans, decoding a segment's working frames, rendering a segment;
- ``i420``: YUV 4:2:0 frames and regions, and whether a picture is flat; ``filekind``: what kind of file a target is;
- ``tables``: the per-segment Arrow tables the stages hand on; ``integrity``: their seals;
- ``patches``: face patches (what the swap and enhance stages hand on) and pasting them back;
- ``demo``: the demo's and the tests' inputs, made from photos in installed packages.
"""
