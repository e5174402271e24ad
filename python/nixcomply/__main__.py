import sys

from nixcomply.cli import main

sys.exit(main())
