require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', 'rpi-u-boot-scr_pyvorin.inc', '', d)}
