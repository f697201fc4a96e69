"""``python3 -m pyvorin_verify_deployment``: the same entry as ``pyvorin-verify-deployment``."""

from pyvorin_verify_deployment.cli import main

raise SystemExit(main())
