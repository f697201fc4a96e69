"""bsdiff-family deltas of root file system images, bounded in memory.

A *windowed delta* (see :mod:`.container`) describes the new image as a
sequence of operations: copy a range of the old image, write zeros, or apply
a standard BSDIFF40 patch to a small, explicitly listed source region of the
old image.  Unchanged, moved and zero blocks cost a few bytes each; only
changed blocks are diffed, window by window, so neither the host nor the
device ever holds a whole image.
"""
