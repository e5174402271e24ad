"""Typed functions over the Nix and NixOS commands and files a host is judged by.

One small function per command, each building an argv for :func:`nixcomply.core.process.run`
and returning a typed value: flake metadata (:mod:`.flake`), building a host's toplevel and
comparing closures (:mod:`.build`), the system profile's generations (:mod:`.generations`),
the running and booted system (:mod:`.system`), activation with ``nixos-rebuild`` or
``switch-to-configuration`` (:mod:`.rebuild`) and git history (:mod:`.git`).

Every host path is resolved under a :class:`~nixcomply.nixos.root.Root` and every program is
named by a :class:`~nixcomply.nixos.tools.Tools` value, so a real host (root ``/``, programs
on PATH) and the sandbox host (a temporary root, an emulated ``nixos-rebuild``) run the same
code.
"""
