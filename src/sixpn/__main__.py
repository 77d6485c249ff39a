"""`python -m sixpn` is the same as the `sixpn` command."""

from sixpn.cli.main import main

main()
