require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', 'tegra-redundant-boot_pyvorin.inc', '', d)}
