"""`python -m silhouette` runs the CLI."""

import sys

from silhouette.cli import main

sys.exit(main())
