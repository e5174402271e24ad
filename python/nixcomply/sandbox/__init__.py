"""The sandbox: an emulated NixOS host built with the real Nix (``emulated``), a private
systemd user manager (``usermanager``), both assembled with keys and a reconciler
configuration (``machine``), and the demo that drives it (``demo``). The flake and the shell
scripts written into a sandbox are data files in ``data/``.
"""
