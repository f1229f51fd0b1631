"""`python -m vlinterp` = the `vlinterp` command."""
import sys

from vlinterp.cli import main

sys.exit(main())
