"""`python -m jifang` runs the command line."""

from jifang.cli import main

main()
