"""The swap stage and what follows it on the faces: one segment's faces swapped into patches,
the masks that decide which pixels are pasted, and enhancement.

- ``segment``: the swap of one segment (tracked faces, the chosen persons, batches, GPU memory);
- ``masks``: box, region and mouth masks on the swapper's aligned crop;
- ``occlusion``: what covers a tracked face, found from the face itself (offline backend);
- ``enhance``: face restorers run on the swapped patches.
"""
