"""The ``halfsec`` command line (typer + rich).  ``main`` wires the commands; each
command lives in its own module."""
