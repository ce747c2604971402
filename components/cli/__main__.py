"""`python -m components.cli`: the same as the `omnistage` entry point."""

from components.cli import main

main()
