SUMMARY = "Pyvorin Edge device software"
DESCRIPTION = "The edge agent service (with the agent selected by \
               PYVORIN_EDGE_AGENT_PACKAGE), the deployment verification \
               tool and the device's fleet identity: what pyvorin-image adds \
               to run the agent."
HOMEPAGE = "https://github.com/pyvorin/meta-pyvorin"
SECTION = "base"
LICENSE = "MIT"

inherit packagegroup features_check

# pyvorin-edge-service is a systemd unit; without systemd the group is
# skipped too instead of breaking `bitbake world`.
REQUIRED_DISTRO_FEATURES = "systemd"

RDEPENDS:${PN} = "pyvorin-edge-service \
                  pyvorin-identity \
                  pyvorin-verify-deployment \
                  "
