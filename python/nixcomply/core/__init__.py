"""Infrastructure every side uses (host, uplink, server): the one subprocess gateway, atomic
files, the state lock, data paths, the YAML source map and the crash-test fault points.

Nothing here imports host runtime, evidence or the server; the linter test keeps it so.
"""
