"""The `rtrec` command line and the demo: the roof, above every other part of the project."""
