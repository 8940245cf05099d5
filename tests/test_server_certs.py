"""toopher-server make-cert: the private CA and server certificate that let
the module believe the server over https (issue 14, item 1)."""
import stat
import subprocess

import pytest

from pam_toopher.api import ToopherApi, UserUnknownError
from tests.support.server import REPO_ROOT, RunningServer, server_command, server_env


def make_cert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(server_command("make-cert", *args), cwd=REPO_ROOT, env=server_env(),
                          capture_output=True, text=True, timeout=60, check=False)


def test_make_cert_writes_a_ca_and_a_server_certificate_it_signed(tmp_path):
    target = tmp_path / "tls"
    made = make_cert("--dir", str(target), "--name", "toopher.example.org",
                     "--name", "127.0.0.1", "--name", "::1")
    assert made.returncode == 0, made.stderr
    assert f"CA certificate (the module's ca_bundle): {target}/ca.pem" in made.stdout
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in target.iterdir()}
    assert modes == {"ca.pem": 0o644, "ca.key": 0o600, "server.pem": 0o644,
                     "server.key": 0o600}
    # Checked by openssl, not by the code that made them.
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(target / "ca.pem"),
                               "-purpose", "sslserver", str(target / "server.pem")],
                              capture_output=True, text=True, check=False)
    assert verified.stdout.strip() == f"{target}/server.pem: OK", verified.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(target / "server.pem"), "-noout",
                           "-ext", "subjectAltName"], capture_output=True, text=True,
                          check=True).stdout
    assert "DNS:toopher.example.org, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1" in text


def test_make_cert_never_overwrites_and_says_so_in_one_line(tmp_path):
    assert make_cert("--dir", str(tmp_path), "--name", "127.0.0.1").returncode == 0
    before = (tmp_path / "ca.key").read_bytes()
    again = make_cert("--dir", str(tmp_path), "--name", "127.0.0.1")
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr == (f"toopher-server: error: {tmp_path}/ca.pem already exists; "
                            "remove it or choose another --dir\n")
    assert (tmp_path / "ca.key").read_bytes() == before


@pytest.mark.parametrize("args, words", [
    (["--name", "bad name"], "is neither a host name nor an IP address"),
    (["--name", "x", "--days", "0"], "--days must be between 1 and 3650"),
    ([], "the following arguments are required: --name"),
])
def test_make_cert_refuses_bad_arguments(tmp_path, args, words):
    done = make_cert("--dir", str(tmp_path / "d"), *args)
    assert done.returncode != 0 and words in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "d" / "ca.key").exists()


def test_the_client_believes_the_server_with_the_made_ca_only():
    # RunningServer(tls=True) serves the certificate make_certificates made.
    with RunningServer(tls=True) as server, \
            ToopherApi(server.key, server.secret, server.url,
                       ca_bundle=server.ca_cert_path) as api, \
            pytest.raises(UserUnknownError):
        api.find_user_by_name("nobody-here")
