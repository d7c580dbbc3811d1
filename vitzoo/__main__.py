"""``python -m vitzoo`` runs the command line."""

from vitzoo.cli import main

main()
