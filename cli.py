"""`python cli.py ...` in a checkout: the same `nexus` command the installed entry point runs.

The command itself lives in the package (`nexus.cli`, generator/cli.py), so the installed
distribution has one top-level import package.
"""

from nexus.cli import main

if __name__ == "__main__":
    main()
