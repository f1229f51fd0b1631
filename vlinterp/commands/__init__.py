"""CLI subcommands, one module each; each registers itself with :func:`vlinterp.cli.register`."""
