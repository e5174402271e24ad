"""What a reconcile process does not load until it needs it (issue 12's memory and start-up
targets, measured in bench/reconcile.py): PyYAML, difflib, cryptography's serialization
(every cipher and key type), and pydantic's plugin loader (importlib.metadata) in the
``nixcomply`` program. Each runs in a fresh interpreter: the
test process has long loaded all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO


def run_fresh(code: str, **env: str) -> dict[str, object]:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout.splitlines()[-1])
    return result


def test_the_reconcile_cycle_imports_no_yaml_parser_until_a_yaml_file_is_parsed() -> None:
    result = run_fresh(
        """
        import json, sys, tempfile
        from pathlib import Path
        import nixcomply.cli, nixcomply.reconcile.cycle, nixcomply.reconcile.daemon
        from nixcomply.evidence.keys import generate
        generate("test.example/k").private_text()  # a key made and written, as a cycle signs
        lazy = ("yaml", "difflib", "nixcomply.core._yamlparse", "cryptography.hazmat.primitives.serialization")
        before = {m: m in sys.modules for m in lazy}
        from nixcomply.core.yamlsource import parse_yaml
        from nixcomply.errors import InputError
        data, source = parse_yaml("a: 1\\nb:\\n  - x\\n", Path("f.yaml"))
        try:
            parse_yaml("a: 1\\na: 2\\n", Path("g.yaml"))
        except InputError as e:
            duplicate = str(e.problems[0])
        print(json.dumps({"before": before, "data": data, "line": source.line_of(("b", 0)),
                          "duplicate": duplicate, "yaml": "yaml" in sys.modules}))
        """
    )
    assert result["before"] == {
        "yaml": False,
        "difflib": False,
        "nixcomply.core._yamlparse": False,
        "cryptography.hazmat.primitives.serialization": False,
    }
    # the parser, once loaded, is the same one: values, lines and errors
    assert result["data"] == {"a": 1, "b": ["x"]}
    assert result["line"] == 3
    assert "g.yaml:2" in str(result["duplicate"]) and "duplicate key 'a'" in str(result["duplicate"])
    assert result["yaml"] is True


def test_a_misspelt_field_still_gets_a_suggestion_with_difflib_loaded_late() -> None:
    result = run_fresh(
        """
        import json, sys
        from pathlib import Path
        from nixcomply.core.yamlsource import SourceMap, validate
        from nixcomply.errors import InputError
        from nixcomply.model.base import StrictModel
        class M(StrictModel):
            timeout: int
        try:
            validate(M, {"timout": 3}, SourceMap(Path("c.json")))
        except InputError as e:
            print(json.dumps({"problems": [str(p) for p in e.problems]}))
        """
    )
    assert result["problems"] == ["c.json: timout: unknown field; did you mean 'timeout'?"]


CHECK_PLUGINS = """
    import json, sys
    from nixcomply.cli import without_pydantic_plugins
    {before}
    without_pydantic_plugins()
    from nixcomply.model.base import StrictModel
    class M(StrictModel):
        n: int
    value = M.model_validate_json('{{"n": 3}}').n
    from pydantic.plugin._loader import get_plugins
    print(json.dumps({{"metadata": "importlib.metadata" in sys.modules, "value": value,
                      "plugins": list(get_plugins()), "loader": get_plugins.__module__}}))
"""


def test_the_nixcomply_program_loads_no_pydantic_plugin_machinery() -> None:
    result = run_fresh(CHECK_PLUGINS.format(before=""))
    assert result == {
        "metadata": False,
        "value": 3,
        "plugins": [],
        "loader": "nixcomply.cli",
    }


@pytest.mark.parametrize(
    ("before", "env"),
    [
        ("import pydantic.plugin._loader", {}),  # someone loaded the real loader: kept
        (
            "",
            {"PYDANTIC_DISABLE_PLUGINS": "some-plugin"},
        ),  # only some disabled: pydantic decides
    ],
)
def test_the_real_plugin_loader_is_kept_when_it_was_loaded_or_plugins_are_chosen(
    before: str, env: dict[str, str]
) -> None:
    result = run_fresh(CHECK_PLUGINS.format(before=before), **env)
    assert result["loader"] == "pydantic.plugin._loader"
    assert result["metadata"] is True
    assert result["value"] == 3


def test_the_console_script_and_python_m_go_through_entry() -> None:
    script = (REPO / "python" / "nixcomply" / "__main__.py").read_text()
    assert "entry()" in script
    pyproject = (REPO / "python" / "pyproject.toml").read_text()
    assert 'nixcomply = "nixcomply.cli:entry"' in pyproject


def test_keys_serialise_as_cryptography_s_raw_format() -> None:
    """``public_bytes_raw``/``private_bytes_raw`` (no serialization import) are the Raw
    encodings the keys were written with before, and a PEM key still loads."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    from nixcomply.evidence.keys import generate, parse_private_key  # noqa: PLC0415

    signer = generate("test.example/raw")
    public = signer.private_key.public_key()
    assert signer.public.raw == public.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    seed = signer.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    again = parse_private_key(signer.private_text(), default_name="x")
    assert again.private_key.private_bytes_raw() == seed and again.public == signer.public
    pem = signer.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert parse_private_key(pem, default_name="test.example/pem").public.raw == signer.public.raw
