"""The demo's phone as a real browser: the web app in headless Chromium with a passkey.

``tools/demo --web-phone`` uses this instead of the simulator: Debian's
Chromium (headless, Selenium, Chrome's virtual passkey; the same driver as
tests/test_phone_browser.py) opens the enrolment link ``toopher-server device
enroll`` prints, registers a passkey, shows a pairing phrase, accepts the
pairing and answers the login by clicking Approve or Deny on the page.
"""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.browser import PhoneBrowser

PYTHON = "/usr/bin/python3"


class WebPhone:
    def __init__(self, db: str, user: str, directory: Path, say: Callable[[str], None]):
        self.db, self.user, self.say = db, user, say
        self.browser = PhoneBrowser(directory)

    def close(self) -> None:
        self.browser.close()

    def enrol(self) -> None:
        enrolled = subprocess.run(
            [PYTHON, "-m", "pam_toopher.server", "device", "enroll", self.user, "--db", self.db,
             "--name", "demo phone", "--no-qr"],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=30)
        link = next(line for line in enrolled.stdout.splitlines() if "://" in line)
        self.say(f"   $ toopher-server device enroll {self.user}")
        self.say(f"   {link}")
        self.browser.open(link)
        self.browser.click("Register")
        self.say(f"   [phone] {self.browser.wait_text('status', 'registered')}"
                 " (a passkey in Chrome's virtual authenticator)")

    def pairing_phrase(self) -> str:
        self.browser.click("Show a pairing phrase")
        return self.browser.wait(lambda: self.browser.text("phrase"), "a pairing phrase")

    def accept_pairing(self, pairing_id: str) -> None:
        self.browser.click("Accept", self.browser.card(pairing_id))
        self.browser.wait(lambda: self.browser.driver.find_element("id", "otp").is_displayed(),
                          "the authenticator app's secret")
        self.say("   [phone] Accept (with the passkey); the page shows the secret for an"
                 " authenticator app once")
        self.browser.click("Done")

    def answer(self, decide: Callable[[dict], bool], timeout: float) -> bool:
        """Wait for the request on the page, let ``decide`` see it, click the answer."""
        card = self.browser.wait(
            lambda: self.browser.driver.find_element("css selector", "#requests li"),
            "the login request on the page", timeout)
        shown = {"action": card.find_element("css selector", ".action").text,
                 "host": card.find_element("css selector", ".host").text}
        approved = decide(shown)
        self.browser.click("Approve" if approved else "Deny", card)
        status = self.browser.wait_text("status", "Approved" if approved else "Denied")
        self.say(f"   [phone] clicked {'Approve' if approved else 'Deny'}: {status}")
        return approved
