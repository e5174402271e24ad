"""Signed, tamper-evident evidence: in-toto statements in DSSE envelopes, kept in an RFC 6962
Merkle log with C2SP signed-note checkpoints, verifiable offline by an auditor.

One module per job: ``statement`` (the statement and predicate models), ``dsse`` (envelopes),
``keys`` (Ed25519 key files), ``keyring`` (trusted public keys and their validity),
``merkle`` (tree hashing and proofs), ``checkpoint`` (signed notes), ``log`` (the Merkle log's
files), ``store`` (the on-disk layout and the append API), ``verify/`` (offline verification:
what it proves with and without a pinned keyring and checkpoint is in its docstring),
``packet`` (the auditor's packet format, shared by ``export`` and ``verify``), ``export``
(writing a packet), ``index`` (the control index), ``attest`` (attestations of
organisational controls), ``rotation`` (key rotation and revocation), ``provision`` (a
host's keys and keyring) and ``scrub`` (PHI).
"""
