"""Debian's Chromium, headless, driven by Selenium, with a virtual passkey.

    with PhoneBrowser(tmp_path) as phone:          # /usr/bin/chromium + chromedriver
        phone.open(link)                           # e.g. the enrolment link
        phone.button("Register").click()           # found by its accessible name
        phone.wait_text("status", "registered")
        phone.set_user_verified(False)             # the next passkey prompts fail UV

The browser is never downloaded: Selenium is pointed at Debian's chromium and
chromium-driver (tools/install-deps).  Chrome's WebAuthn virtual authenticator
(DevTools ``WebAuthn`` domain, through Selenium 4's API) holds the passkey: a
platform authenticator with user verification, answering prompts at once.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import (
    Protocol,
    Transport,
    VirtualAuthenticatorOptions,
)
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Running as root in a container, and a closed network: no sandbox, no
#: background traffic to hosts that would be refused.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
#: A phone-sized window (CSS pixels).
PHONE_SIZE = (412, 915)
WAIT = 10.0

# Records the page's POST bodies, so a test can replay one.
RECORD_POSTS = """
window.__posts = [];
const original = window.fetch;
window.fetch = function (url, init) {
  if (init && init.method === "POST") window.__posts.push([String(url), init.body]);
  return original.apply(this, arguments);
};
"""


def browser_available() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing (tools/install-deps installs chromium and chromium-driver)"
    return None


class PhoneBrowser:
    def __init__(self, directory: Path | None = None):
        self._profile = tempfile.mkdtemp(prefix="chromium-", dir=directory)
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        options.add_argument(f"--window-size={PHONE_SIZE[0]},{PHONE_SIZE[1]}")
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.add_virtual_authenticator(VirtualAuthenticatorOptions(
            protocol=Protocol.CTAP2, transport=Transport.INTERNAL, has_resident_key=True,
            has_user_verification=True, is_user_consenting=True, is_user_verified=True))

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the page ---------------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = condition()
            except (NoSuchElementException, StaleElementReferenceException):
                result = None
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; status line:"
                                     f" {self.text('status')!r}")
            time.sleep(0.05)

    def text(self, element_id: str) -> str:
        try:
            return self.driver.find_element(By.ID, element_id).text
        except NoSuchElementException:
            return ""

    def wait_text(self, element_id: str, fragment: str, timeout: float = WAIT) -> str:
        return self.wait(lambda: fragment in self.text(element_id) and self.text(element_id),
                         f"{fragment!r} in #{element_id}", timeout)

    def button(self, name: str, within: WebElement | None = None) -> WebElement:
        """The visible button whose accessible name (as a screen reader gets it) is ``name``."""
        root = within or self.driver
        for button in root.find_elements(By.TAG_NAME, "button"):
            if button.is_displayed() and button.accessible_name == name:
                return button
        raise NoSuchElementException(f"no visible button named {name!r}")

    def click(self, name: str, within: WebElement | None = None) -> None:
        """Click the button named ``name`` once it is enabled (a new request's
        Approve button is armed one second after it appears)."""
        self.wait(lambda: self.button(name, within).is_enabled(), f"{name!r} enabled")
        self.button(name, within).click()

    def card(self, object_id: str) -> WebElement:
        """The request's (or pairing's) card on the page, once it is shown."""
        return self.wait(lambda: self.driver.find_element(
            By.CSS_SELECTOR, f'li[data-id="{object_id}"]'), f"the card of {object_id}")

    def set_user_verified(self, verified: bool) -> None:
        self.driver.set_user_verified(verified)

    def record_posts(self) -> None:
        self.driver.execute_script(RECORD_POSTS)

    def posts(self) -> list:
        return self.driver.execute_script("return window.__posts || [];")

    def post_from_page(self, url: str, body: str) -> tuple[int, str]:
        """POST ``body`` from the page itself (its cookie, origin and CSRF token)."""
        result = self.driver.execute_async_script("""
            const [url, body, done] = arguments;
            fetch(url, {method: "POST", credentials: "same-origin", body,
                        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}})
              .then(async (r) => done([r.status, await r.text()]))
              .catch((e) => done([0, String(e)]));
        """, url, body)
        return int(result[0]), str(result[1])

    def screenshot(self, path: Path) -> None:
        self.driver.save_screenshot(str(path))
