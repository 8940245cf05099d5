"""The phone web app in a real browser: Debian's Chromium with a virtual passkey.

A phone is enrolled with the link ``toopher-server device enroll`` prints,
paired by ``toopher-pam pair`` with the phrase the page shows, then answers
real logins through the module (pamtester, and the real sudo) by clicks on
the page.  The passkey is Chrome's WebAuthn virtual authenticator; the server
verifies its registrations and assertions with python-fido2.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pexpect
import pyotp
import pytest

from tests.support.browser import PhoneBrowser, browser_available
from tests.support.pam import PamResult, PamService, toopher_line, unique_name
from tests.support.server import (REPO_ROOT, RunningServer, privileged_port, server_command,
                                  server_env)
from tests.support.sudo import SudoRule, spawn_sudo_as

pytestmark = pytest.mark.usefixtures("root_only")

AUTH_TIMEOUT = 30
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "phone-page.png"
#: UPDATE_SCREENSHOT=1 writes the screenshot test's picture to docs/.
UPDATE_SCREENSHOT = os.environ.get("UPDATE_SCREENSHOT") == "1"


# Rewrites the server's passkey options in the page to ask for no user verification.
LOWER_USER_VERIFICATION = """
window.__untampered = window.fetch;
window.fetch = async function (url, init) {
  const response = await window.__untampered.apply(this, arguments);
  if (!String(url).endsWith("/options")) return response;
  const options = await response.json();
  options.publicKey.userVerification = "discouraged";
  return new Response(JSON.stringify(options), {
    status: response.status, headers: {"Content-Type": "application/json"}});
};
"""


@pytest.fixture
def web():
    """toopher-server with the web app at http://localhost:PORT/app/ (rp_id localhost)."""
    # The module believes plain http only on a port below 1024 (docs/pam.md); the
    # page needs http://localhost or https on a DNS name for passkeys.
    with RunningServer(serve_args=["--public-url", "http://localhost"],
                       port=privileged_port()) as server:
        yield server


@pytest.fixture
def phone(tmp_path):
    missing = browser_available()
    if missing:
        pytest.skip(missing)
    with PhoneBrowser(tmp_path) as browser:
        yield browser


def enrol(web: RunningServer, phone: PhoneBrowser, user: str) -> None:
    enrolled = subprocess.run(server_command("device", "enroll", user, "--db", web.db_path),
                              cwd=REPO_ROOT, env=server_env(), capture_output=True, text=True,
                              timeout=30, check=True)
    link = next(line for line in enrolled.stdout.splitlines() if line.startswith("http://"))
    phone.open(link)
    phone.click("Register")
    phone.wait_text("status", "This phone is registered")
    phone.wait_text("who", user)


def pair_from_page(web: RunningServer, phone: PhoneBrowser, scene) -> str:
    """The admin types the phrase the page shows; the phone accepts with its passkey.

    Returns the otpauth:// link the page shows once.
    """
    phone.click("Show a pairing phrase")
    phrase = phone.wait(lambda: phone.text("phrase"), "a pairing phrase")
    pairing = subprocess.Popen(["/usr/bin/python3", "-m", "pam_toopher.cli", "--config",
                                str(scene.config_path), "pair", scene.user.name,
                                "--phrase", phrase, "--timeout", "30"],
                               cwd=REPO_ROOT, env=server_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        [pending] = phone.wait(lambda: web.query("SELECT id FROM pairings WHERE pending = 1"),
                               "the pairing on the server")
        card = phone.card(pending[0])
        phone.click("Accept", card)
        out, err = pairing.communicate(timeout=30)
    finally:
        if pairing.poll() is None:
            pairing.kill()
    assert pairing.returncode == 0, err
    assert f"{scene.user.name} is paired." in out
    phone.wait(lambda: phone.driver.find_element("id", "otp").is_displayed(), "the OTP secret")
    return phone.driver.find_element("id", "otp-link").get_attribute("href")


def start_login(scene) -> tuple[threading.Thread, dict]:
    """A pamtester login through the module, waiting for the phone in a thread."""
    outcome: dict[str, PamResult] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault(
        "result", scene.pamtester([scene.user.password, ""], timeout=AUTH_TIMEOUT + 30)))
    thread.start()
    return thread, outcome


def pending_request(web: RunningServer, before: set) -> str:
    """The one request created since ``before`` (a set of ids), once the module made it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        new = [row[0] for row in web.query("SELECT id FROM auth_requests WHERE pending = 1")
               if row[0] not in before]
        if new:
            [request_id] = new
            return request_id
        time.sleep(0.05)
    raise AssertionError(f"no request reached the server; log: {web.log()}")


def request_ids(web: RunningServer) -> set:
    return {row[0] for row in web.query("SELECT id FROM auth_requests")}


def configure(scene, web: RunningServer, otp_fallback: bool = False) -> None:
    scene.write_config(api_url=web.url, consumer_key=web.key, consumer_secret=web.secret,
                       auth_timeout=AUTH_TIMEOUT, http_timeout=5, otp_fallback=otp_fallback)


def test_a_login_is_approved_and_a_sudo_command_denied_by_clicks(web, phone, scene):
    configure(scene, web)
    enrol(web, phone, scene.user.name)
    otpauth = pair_from_page(web, phone, scene)
    secret = pyotp.parse_uri(otpauth)
    assert (secret.digits, secret.interval, secret.digest().name) == (6, 30, "sha1")
    phone.click("Done")
    scene.install_service()

    # The authenticator app's code works at the module's code prompt.
    configure(scene, web, otp_fallback=True)
    result = scene.pamtester([scene.user.password, secret.now()])
    assert result.ok, result
    assert scene.audit()["outcome"] == "granted"
    configure(scene, web)

    # A pamtester login: the request appears on the page without a reload.
    before = request_ids(web)
    thread, outcome = start_login(scene)
    request_id = pending_request(web, before)
    card = phone.card(request_id)
    action = card.find_element("css selector", ".action").text
    assert action == f"{scene.service.name} login from 203.0.113.5"
    assert card.find_element("css selector", ".host").text  # the terminal name
    assert card.find_element("css selector", ".requester").text == "test requester"
    phone.click("Approve", card)
    thread.join(AUTH_TIMEOUT + 30)
    result = outcome["result"]
    assert result.ok, f"{result}\n{scene.describe()}\n{web.log()}"
    audit = scene.audit_lines()[-1]
    assert audit["outcome"] == "granted" and audit["request"] == request_id
    phone.wait_text("status", "Approved")

    # A sudo command, seen on the page as it will run, denied by a click.
    sudo_service = PamService(["auth requisite pam_unix.so",
                               toopher_line(scene.hook, scene.config_path),
                               "account required pam_unix.so",
                               "session required pam_permit.so"],
                              name=f"sudo-{unique_name()}")
    try:
        with SudoRule(scene.user.name, sudo_service.name, ["/usr/bin/id"]):
            before = request_ids(web)
            child = spawn_sudo_as(scene.user.name, ["/usr/bin/id", "-u"])
            child.expect(r"\[sudo\] password for \w+: ")
            child.sendline(scene.user.password)
            request_id = pending_request(web, before)
            card = phone.card(request_id)
            assert card.find_element("css selector", ".action").text == \
                f"{sudo_service.name}: -k -S /usr/bin/id -u"
            phone.click("Deny", card)
            child.expect(pexpect.EOF, timeout=AUTH_TIMEOUT + 10)
            child.close()
            assert child.exitstatus == 1, child.before
            assert "the request was denied" in child.before
    finally:
        sudo_service.remove()
    assert web.query("SELECT granted, pending FROM auth_requests WHERE id = ?",
                     request_id) == [(0, 0)]

    # Who answered what, from which device, with the passkey's assertion kept.
    answers = subprocess.run(server_command("answers", "--db", web.db_path), cwd=REPO_ROOT,
                             env=server_env(), capture_output=True, text=True, timeout=30,
                             check=True).stdout.splitlines()
    assert answers[0].split()[1:4] == ["deny", "request", request_id]
    assert "proof=session" in answers[0]
    assert answers[1].split()[1:3] == ["approve", "request"] and "proof=passkey" in answers[1]
    assert answers[2].split()[1:3] == ["accept", "pairing"] and "proof=passkey" in answers[2]


def test_no_approval_without_user_verification_and_no_replay(web, phone, scene):
    configure(scene, web)
    enrol(web, phone, scene.user.name)
    pair_from_page(web, phone, scene)
    phone.click("Done")
    scene.install_service()

    before = request_ids(web)
    thread, outcome = start_login(scene)
    request_id = pending_request(web, before)
    card = phone.card(request_id)
    # The fingerprint/PIN check fails: the browser itself refuses to sign,
    # since the server asked for user verification.
    phone.set_user_verified(False)
    phone.click("Approve", card)
    phone.wait_text("status", "cancelled or refused")
    # A tampered page that lowers the requirement gets an assertion without
    # the UV flag signed: the server refuses it.
    phone.driver.execute_script(LOWER_USER_VERIFICATION)
    phone.click("Approve", phone.card(request_id))
    phone.wait_text("status", "user verified flag not set")
    assert web.query("SELECT pending FROM auth_requests WHERE id = ?", request_id) == [(1,)]
    phone.driver.execute_script("window.fetch = window.__untampered;")

    # Verified this time; the page's approval is recorded so that it can be replayed.
    phone.set_user_verified(True)
    phone.record_posts()
    phone.click("Approve", phone.card(request_id))
    thread.join(AUTH_TIMEOUT + 30)
    assert outcome["result"].ok, outcome["result"]
    [(url, body)] = [post for post in phone.posts() if post[0].endswith("/approve")]
    assert json.loads(body)["credential"]["signature"]

    # The same assertion again, from the page itself: refused.
    status, answer = phone.post_from_page(url, body)
    assert status == 400 and "already used" in answer

    # ... and for another pending request: refused, that request stays pending.
    before = request_ids(web)
    thread, outcome = start_login(scene)
    other = pending_request(web, before)
    status, answer = phone.post_from_page(url.replace(request_id, other), body)
    assert status == 400, answer
    assert web.query("SELECT pending FROM auth_requests WHERE id = ?", other) == [(1,)]
    phone.click("Deny", phone.card(other))
    thread.join(AUTH_TIMEOUT + 30)
    assert outcome["result"].failed_with("PAM_AUTH_ERR"), outcome["result"]
    assert [line["outcome"] for line in scene.audit_lines()] == ["granted", "denied"]


def test_screenshot_of_the_page_on_a_phone(web, phone, tmp_path):
    """docs/phone-page.png: the page as a phone shows it, with two pending requests."""
    phone.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
    enrol(web, phone, "alice")
    client = web.client()
    phrase = web.phone.make_pairing_phrase("alice")
    pairing = client.post("pairings/create", user_name="alice", pairing_phrase=phrase).json()
    web.phone.accept_pairing(pairing["id"])
    for terminal, action in (("web-1", "sshd login from 203.0.113.5"),
                             ("db-2", "sudo: /usr/bin/systemctl restart postgresql")):
        client.post("authentication_requests/initiate", pairing_id=pairing["id"],
                    terminal_name=terminal, action_name=action)
    phone.wait(lambda: len(phone.driver.find_elements("css selector", "#requests li")) == 2,
               "two requests on the page")
    shot = tmp_path / "phone-page.png"
    phone.screenshot(shot)
    assert shot.stat().st_size > 10_000
    if UPDATE_SCREENSHOT:
        DOCS_SCREENSHOT.write_bytes(shot.read_bytes())
