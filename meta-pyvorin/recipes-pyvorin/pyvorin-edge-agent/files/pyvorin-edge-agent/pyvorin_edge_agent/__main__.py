"""``python3 -m pyvorin_edge_agent``: the same entry as ``pyv-edge-agent``."""

from pyvorin_edge_agent.cli import main

raise SystemExit(main())
