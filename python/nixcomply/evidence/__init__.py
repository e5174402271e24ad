"""Signed, tamper-evident evidence: in-toto statements in DSSE envelopes, kept in an RFC 6962
Merkle log with C2SP signed-note checkpoints, verifiable offline by an auditor.

One module per job: ``statement`` (the statement and predicate models), ``dsse`` (envelopes),
``keys`` (Ed25519 key files), ``keyring`` (trusted public keys and their validity),
``merkle`` (tree hashing and proofs), ``checkpoint`` (signed notes), ``store`` (the on-disk
layout and the append API), ``verify``, ``export`` (the auditor's packet), ``attest``
(attestations of organisational controls) and ``rotation`` (key rotation and revocation).
"""
