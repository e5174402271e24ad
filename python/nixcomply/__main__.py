import sys

from nixcomply.cli import entry

sys.exit(entry())
