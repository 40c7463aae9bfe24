"""``python -m costwarden``: the same as the ``costwarden`` command."""

from costwarden.cli import main

main()
