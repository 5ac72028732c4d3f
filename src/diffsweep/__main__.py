"""`python -m diffsweep` is the same as the `diffsweep` command."""

from diffsweep.cli.app import main

if __name__ == "__main__":
    main()
