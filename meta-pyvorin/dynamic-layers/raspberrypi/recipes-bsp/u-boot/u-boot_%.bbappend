require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', 'u-boot_pyvorin.inc', '', d)}
