require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-update', 'swupdate_pyvorin.inc', '', d)}
