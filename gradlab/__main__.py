"""``python -m gradlab``: the command-line interface (see ``gradlab --help``)."""

from gradlab.cli import main

raise SystemExit(main())
