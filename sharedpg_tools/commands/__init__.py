"""One module per subcommand; each parses its arguments, calls the core and returns an exit code."""
