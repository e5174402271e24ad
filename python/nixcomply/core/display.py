"""Text from someone else, made safe to print on a terminal.

File names in a store, origins, checkpoint extension lines and messages that quote them are
written by whoever controls a host: printed as they are, an escape sequence (``ESC [``, the
one-byte ``CSI`` U+009B, an OSC title or hyperlink) would be run by the operator's or the
auditor's terminal, and a bidirectional override (U+202E) would show text in another order
than it is. :func:`shown` escapes every character Python does not call printable (controls,
format characters, separators other than the space), the way ``repr`` spells them; ``--json``
output needs nothing (JSON escapes them itself).
"""

from __future__ import annotations


def _escape(c: str) -> str:
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def shown(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)
