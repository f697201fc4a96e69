require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-hardening', 'linux-raspberrypi_pyvorin.inc', '', d)}
require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-verity', 'linux-raspberrypi-pyvorin-verity.inc', '', d)}
