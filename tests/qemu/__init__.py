"""A QEMU arm64 machine that boots the layer's A/B boot script with a U-Boot
that has the real boot counter, for the rollback scenarios of
tests/test_rollback.py. Every input comes from Debian 12; built artefacts are
cached under ``${XDG_CACHE_HOME:-~/.cache}/pyvorin-tests/qemu``."""
