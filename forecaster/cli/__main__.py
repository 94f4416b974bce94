"""`python -m forecaster.cli`: the same as the ``forecaster`` console script."""

from forecaster.cli import main

if __name__ == "__main__":
    main()
