"""python -m forge_pipeline.cli: the same as the `forge` command."""
import sys

from forge_pipeline.cli import main

sys.exit(main())
