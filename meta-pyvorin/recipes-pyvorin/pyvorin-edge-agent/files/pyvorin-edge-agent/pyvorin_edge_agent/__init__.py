"""Pyvorin Edge agent, reference implementation: health and metrics over HTTP on
loopback, sensor readings and a cloud sync queue in SQLite under /data, online
backups.  Standard library only, so it runs on the image's Python as shipped."""

__version__ = "1.0.0"
