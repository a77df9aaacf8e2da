"""`python -m nexus`: the `nexus` command."""

from .cli import main

main()
