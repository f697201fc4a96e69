require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-hardening', 'linux-raspberrypi_pyvorin.inc', '', d)}
