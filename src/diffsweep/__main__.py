"""`python -m diffsweep` is the same as the `diffsweep` command."""

from diffsweep.cli import main

if __name__ == "__main__":
    main()
