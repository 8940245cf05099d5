"""The environment PAM programs are started with in tests and the demo.

pam_python starts Debian's /usr/bin/python3, which finds its standard
library through the first ``python3`` on PATH: started from a shell with
pyenv or conda first on PATH, pamtester (and any non-setuid program) would
load that other Python and the module would fail to import.  So pamtester,
sshd and sudo get the system PATH, as an init system or a login gives them.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def system_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``base`` (default: this process's environment) with the system PATH."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = SYSTEM_PATH
    return env
