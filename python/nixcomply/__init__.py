"""nixcomply: NixOS-native compliance configuration, reconciliation and evidence."""

from typing import Final

__version__: Final = "0.1.0"
