"""Who ran a command, as evidence names them.

Evidence records the person who acted: a technician who runs ``sudo nixcomply ...`` is the
actor, not root. So the sudo caller (``$SUDO_USER``, set by sudo and by nothing a plain
login does) wins over the effective user; without a user name at all the actor is
``external``, as for changes nixcomply did not make.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping


def invoking_user(environ: Mapping[str, str] = os.environ) -> str:
    """The person who ran this process: the sudo caller rather than root."""
    sudo_user = environ.get("SUDO_USER")
    if sudo_user:
        return sudo_user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "external"
