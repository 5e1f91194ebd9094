"""`python -m lutlm.cli`: the `lutlm` command."""

import sys

from lutlm.cli import main

sys.exit(main())
