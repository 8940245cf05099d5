"""The client's shape: the seam the flow and the CLI use, the error
categories, and the import cost of what the login path imports.

mypy (run by tools/test) checks ``_type_check`` below: the real client and
the tests' fake must both be a ToopherClient.  The tests check at run time
what mypy cannot: the same parameter names, and that nothing raises the
root error class.
"""
import ast
import inspect
import subprocess
from pathlib import Path

import pytest

from pam_toopher import CLIENT_NAMES, api, errors
from pam_toopher.client import ToopherApi
from pam_toopher.flow import ToopherClient
from tests.support.fake_api import FakeClock, FakeToopher

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_METHODS = sorted(
    name for name, value in vars(ToopherClient).items()
    if callable(value) and not name.startswith("_"))


def _type_check() -> None:
    """Never called: mypy checks that both assignments type-check."""
    real: ToopherClient = ToopherApi("key", "secret")
    fake: ToopherClient = FakeToopher(FakeClock())
    del real, fake


@pytest.mark.parametrize("implementation", [ToopherApi, FakeToopher])
@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_the_client_and_the_fake_have_the_protocols_methods(implementation, name):
    wanted = inspect.signature(getattr(ToopherClient, name))
    got = inspect.signature(getattr(implementation, name))
    positional = [p.name for p in wanted.parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD]
    have = [p.name for p in got.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
    # The fake may name its parameters shorter; the real client must match.
    assert len(have) >= len(positional), (name, have)
    if implementation is ToopherApi:
        assert have[:len(positional)] == positional, (name, have)


def test_the_protocol_covers_what_the_flow_and_cli_call():
    called = set()
    for module in ("flow.py", "cli.py"):
        tree = ast.parse((REPO_ROOT / "pam_toopher" / module).read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute))
                    and (getattr(node.value, "id", None) == "api"
                         or getattr(node.value, "attr", None) == "client")):
                called.add(node.attr)
    assert called and called <= set(PROTOCOL_METHODS) | {"deadline"}, called


def test_every_client_error_is_a_category_and_none_raises_the_root():
    categories = {errors.ToopherUnavailableError, errors.ToopherRefusedError,
                  errors.MalformedResponseError, errors.ToopherTLSError,
                  errors.DeadlineExceededError, errors.AnswerLostError,
                  errors.RequestNotSentError}
    for name in errors.__all__:
        value = getattr(errors, name)
        if isinstance(value, type) and value is not errors.ToopherApiError:
            assert any(issubclass(value, c) for c in categories), name
    for path in sorted(Path(REPO_ROOT, "pam_toopher").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                called = getattr(func, "id", None) or getattr(func, "attr", None)
                assert called != "ToopherApiError", f"{path}:{node.lineno} raises the root"


def test_the_facade_exports_every_public_client_name():
    assert set(CLIENT_NAMES) <= set(api.__all__)
    for name in api.__all__:
        assert getattr(api, name) is not None


def test_the_errors_module_does_not_import_the_http_stack():
    script = (f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r});"
              "import pam_toopher.errors, pam_toopher.models, pam_toopher as toopher;"
              "toopher.ToopherRefusedError, toopher.ToopherUnavailableError;"
              "print(sorted(m for m in ('requests', 'urllib3', 'requests_oauthlib', 'http.client',"
              " 'pam_toopher.transport') if m in sys.modules))")
    result = subprocess.run(["/usr/bin/python3", "-I", "-c", script], capture_output=True,
                            text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr
