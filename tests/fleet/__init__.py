"""The fleet's servers, real and on loopback only: goosebit (hawkBit DDI) and
the mutual-TLS proxy in front of it (tests/test_fleet_*.py)."""
