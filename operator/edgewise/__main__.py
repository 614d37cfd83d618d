"""`python -m edgewise …` is the same as the `edgewise` console script."""

from edgewise.cli.main import main

if __name__ == "__main__":
    main()
