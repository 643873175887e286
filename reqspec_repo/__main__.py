"""``python -m reqspec_repo``: the ``reqspec`` command."""

from ._cli.main import main

raise SystemExit(main())
