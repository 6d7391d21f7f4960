"""`python -m herd.cli`: the `herd` command."""

import sys

from herd.cli.main import main

sys.exit(main())
