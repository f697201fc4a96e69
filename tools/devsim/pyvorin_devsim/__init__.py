"""The device's update path on a build host, for the example and the tests.

- :mod:`device_swupdate` builds the swupdate and libubootenv the device runs
  (the pinned 2026.05.1 / 0.3.5 from ../shared/upstream, configured as
  meta-swupdate with the layer's fragment merges them), for the host and for
  arm64, cached by input hash;
- :mod:`swupdate_sandbox` runs that swupdate against file-backed A/B slots and a
  file-backed U-Boot environment in a private mount namespace;
- :mod:`cache` keeps such builds, one directory per input hash.

Not part of the device or the release tool: a developer's and CI's stand-in for
a board, used by ``scripts/run-example.sh`` and by ``tests/``.
"""
