"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.

``start_chromium`` trusts exactly one server key, the test broker's (Chromium's
``--ignore-certificate-errors-spki-list`` with the SHA-256 of its public key), so the pages are
loaded over verified-by-pin TLS and nothing else is trusted. The browser's profile lives in the
caller's directory; the driver never downloads anything (the paths are given, so Selenium
Manager is not asked). With CI=true a browser that cannot start fails the test
(``tests.support.services.unavailable``).

``screenshot`` saves a page as a test artifact below ``$MINT_BRIDGE_ARTIFACTS`` (default
``test-artifacts/`` in the repository).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service

from tests.support.services import unavailable

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = ("/usr/bin/chromium", "/usr/lib/chromium/chromium")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _found(candidates: tuple[str, ...], name: str) -> str | None:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


def spki_pin(cert_pem: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of a certificate: Chromium's pin format."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def start_chromium(profile: Path, server_cert: Path) -> webdriver.Chrome:
    binary, driver = _found(CHROMIUM, "chromium"), _found(CHROMEDRIVER, "chromedriver")
    if binary is None or driver is None:
        unavailable("chromium or chromedriver is not installed (apt-get install chromium "
                    "chromium-driver)")  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-dev-shm-usage",
                     "--window-size=1280,900", f"--user-data-dir={profile}",
                     f"--ignore-certificate-errors-spki-list={spki_pin(server_cert)}"):  # fmt: skip
        options.add_argument(argument)
    try:
        browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    except WebDriverException as exc:
        unavailable(f"headless Chromium did not start: {exc.msg}")
    browser.set_page_load_timeout(30)
    return browser


def artifacts_dir(group: str) -> Path:
    root = Path(os.environ.get("MINT_BRIDGE_ARTIFACTS", REPO / "test-artifacts"))
    path = root / group
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(browser: webdriver.Chrome, group: str, name: str) -> Path:
    """The whole page as PNG; returns its path (the test asserts it is a PNG)."""
    path = artifacts_dir(group) / f"{name}.png"
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, max(600, min(int(height) + 40, 4000)))
    browser.save_screenshot(str(path))
    browser.set_window_size(1280, 900)
    return path
