"""``python3 -m pam_toopher.server``: the same as the ``toopher-server`` command."""
import sys

from .cli import main

sys.exit(main())
