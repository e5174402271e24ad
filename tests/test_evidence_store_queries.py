"""The evidence store functions the reconciler asks before and after it acts: whether both
keys may sign the next entry (asked before anything is activated), and the newest statement
read back (to recognise its own record after a crash)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_evidence import Keys, generation_change, make_keys, open_store, write_keyring

from nixcomply.evidence.log import StoreError
from nixcomply.evidence.statement import GenerationChange, GenerationChangeStatement


def test_the_newest_statement_is_read_back_parsed(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        assert store.tail_statement() is None
        store.append(generation_change(0), attachments={"a.txt": b"x"})
        recorded = store.append(generation_change(1), attachments={"a.txt": b"y"})
        statement = store.tail_statement()
    assert isinstance(statement, GenerationChangeStatement)
    assert isinstance(statement.predicate, GenerationChange)
    assert statement.predicate.chain is not None and statement.predicate.chain.seq == recorded.seq == 1


def test_an_unreadable_newest_statement_is_none_not_an_error(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        recorded = store.append(generation_change(0), attachments={"a.txt": b"x"})
        (recorded.path / "statement.json").write_text("{not json")
        assert store.tail_statement() is None


def test_keys_the_keyring_does_not_list_are_refused_before_any_append(tmp_path: Path, keys: Keys) -> None:
    with open_store(tmp_path, keys) as store:
        write_keyring(tmp_path, keys)
        store.check_keys()
        write_keyring(tmp_path, make_keys())  # another host's keyring: neither key is in it
        with pytest.raises(StoreError, match=r"the bundle key .* is not in it; it may not sign entry 0"):
            store.check_keys()
        assert store.tail() is None
