"""One module per subcommand, each with ``setup_parser(subparsers)`` and ``run(args)``."""
