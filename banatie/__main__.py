"""`python -m banatie`: the `banatie` command."""

import sys

from banatie.cli import main

sys.exit(main())
