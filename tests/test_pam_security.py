"""Issue 14's module-side findings, each through the real PAM library
(pamtester) or the real sudo, with an unprivileged local user as attacker."""

import os
import socket
import subprocess

import pytest

from tests.support.impostor import Impostor
from tests.support.server import RunningServer
from tests.test_pam import ready, settings, srv  # noqa: F401 (srv: the https server fixture)

pytestmark = pytest.mark.usefixtures("root_only")


def free_port(family=socket.AF_INET, host="127.0.0.1", below=None):
    """A port free on ``host``; with ``below``, a privileged one."""
    candidates = range(below - 1, 600, -1) if below else [0]
    for port in candidates:
        with socket.socket(family) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


# ------------------------------------------ item 1: loopback http impersonation

def refused_as_impersonable(scene, impostor, url, words):
    scene.install_service(args=[f"audit_log={scene.audit_path}"])
    result = scene.pamtester([scene.user.password, ""])
    assert result.failed_with("PAM_SERVICE_ERR"), result
    audit = scene.audit()
    assert audit["outcome"] == "config_error", audit
    assert url in audit["reason"] or "api_url" in audit["reason"]
    assert "must use https://" in audit["reason"] and words in audit["reason"], audit
    assert impostor.requests() == []  # never even asked


def test_a_users_server_on_ipv6_localhost_is_not_believed(scene):
    """The real server holds 127.0.0.1:P over plain http; a local user
    answers on [::1]:P, which the name localhost means too (and first)."""
    with RunningServer() as plain, Impostor("::1", plain.port) as impostor:
        url = f"http://localhost:{plain.port}/v1"
        ready(scene, plain, rule="deny", failmode="safe", api_url=url, ca_bundle=None)
        refused_as_impersonable(scene, impostor, url, "not to the name localhost")
        url = f"http://[::1]:{plain.port}/v1"
        scene.audit_path.unlink()
        scene.write_config(**settings(plain, failmode="safe", ca_bundle=None, api_url=url))
        refused_as_impersonable(scene, impostor, url, f"port {plain.port} can be served by any")


def test_a_users_server_on_a_freed_loopback_port_is_not_believed(scene, srv):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    with Impostor("127.0.0.1", port) as impostor:
        ready(scene, srv, rule="deny", failmode="safe", api_url=url, ca_bundle=None)
        refused_as_impersonable(scene, impostor, url, f"port {port} can be served by any")


def test_the_impostor_would_grant_to_a_module_that_believed_it(scene, srv):
    """The tests above can fail: the impostor does answer 'granted'."""
    from pam_toopher.api import ToopherApi

    port = free_port()
    with Impostor("127.0.0.1", port) as impostor, \
            ToopherApi("k", "s", f"http://127.0.0.1:{port}/v1") as api:
        status = api.authenticate("alice", "host1", action_name="log in")
        assert status.granted and not status.pending
        assert impostor.requests()


def test_plain_http_to_a_port_only_root_can_bind_is_accepted(scene, tmp_path):
    start = int(open("/proc/sys/net/ipv4/ip_unprivileged_port_start").read())
    with RunningServer() as plain:  # started once to make its requester, then moved
        plain.stop()
        plain.port = free_port(below=start)
        plain.start()
        assert plain.url == f"http://127.0.0.1:{plain.port}/v1" and plain.port < start
        ready(scene, plain, ca_bundle=None)
        result = scene.pamtester([scene.user.password, ""])
    assert result.ok, result
    assert scene.audit()["outcome"] == "granted"
