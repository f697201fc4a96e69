require ${@bb.utils.contains('DISTRO_FEATURES', 'pyvorin-hardening', 'linux-jammy-nvidia-tegra_pyvorin.inc', '', d)}
