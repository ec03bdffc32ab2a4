"""`python -m tfsft` is the same as the `tfsft` command."""

from tfsft.cli import main

main()
