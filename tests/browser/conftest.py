"""Browser-test fixtures: one headless Debian Chromium per session driven by Playwright's sync API,
a fresh context and page per test against pytest-django's live server, screenshots, and
builders for the receipts and bundles the portal shows."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Playwright's sync API runs an asyncio loop in the test thread; Django's ORM refuses to run
# where a loop is running unless told that this is deliberate (the ORM is still used synchronously).
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

from playwright.sync_api import Browser, Page, Playwright, sync_playwright  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 812}
PASSWORD = "test-password-123"


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (the browser tests use Debian's build)")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    browser = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def tolerated_errors() -> list[str]:
    """Substrings of console errors a test provokes on purpose (e.g. a dropped request); append to it."""
    return []


@pytest.fixture
def page(browser: Browser, live_server: Any, tolerated_errors: list[str]) -> Iterator[Page]:
    """A page in a fresh context (no cookies), with relative URLs resolved against the live server."""
    context = browser.new_context(base_url=live_server.url, viewport=DESKTOP, locale="en-GB",
                                  timezone_id="UTC")
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Console errors include assets that failed to load; expected 4xx answers are checked by the tests.
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
            and "status of 4" not in msg.text else None)
    yield page
    context.close()
    errors = [e for e in errors if not any(t in e for t in tolerated_errors)]
    assert not errors, f"JavaScript or loading errors on the page: {errors}"


@pytest.fixture
def new_page(browser: Browser, live_server: Any) -> Iterator[Callable[[], Page]]:
    """Pages in separate contexts (separate cookie jars: one per signed-in trader), each checked for
    JavaScript and loading errors at the end like `page`."""
    opened: list[tuple[Any, list[str]]] = []

    def make() -> Page:
        context = browser.new_context(base_url=live_server.url, viewport=DESKTOP, locale="en-GB", timezone_id="UTC")
        context.set_default_timeout(10_000)
        fresh = context.new_page()
        errors: list[str] = []
        fresh.on("pageerror", lambda exc: errors.append(str(exc)))
        fresh.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
                 and "status of 4" not in msg.text else None)
        opened.append((context, errors))
        return fresh

    yield make
    for context, errors in opened:
        context.close()
        assert not errors, f"JavaScript or loading errors on the page: {errors}"


@pytest.fixture
def shoot() -> Callable[[Page, str], None]:
    """Save full-page screenshots at desktop and 375 px phone width to var/screenshots/<name>-*.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Page, name: str) -> None:
        before = page.viewport_size or DESKTOP
        page.set_viewport_size(DESKTOP)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-desktop.png"), full_page=True)
        page.set_viewport_size(PHONE)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-375.png"), full_page=True)
        # Nothing may force sideways scrolling at phone width (wide tables scroll inside their own box).
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        page.set_viewport_size(before)  # type: ignore[arg-type]
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than a 375 px screen"

    return take


@pytest.fixture
def sign_in() -> Callable[..., None]:
    def submit(page: Page, username: str, password: str = PASSWORD) -> None:
        page.goto("/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.locator("main").get_by_role("button", name="Sign in").click()

    return submit


# --- receipts and bundles ---------------------------------------------------------------------------


@pytest.fixture
def receipt_world() -> Any:
    """A warehouse, its operator and an assay lab with a registered key; `.receipt(holder, quantity=...)`
    issues a graded receipt through receipts.services, so it carries a real signed event chain."""
    from receipts.services import catalogue_sync
    from tests.factories.receipts import ReceiptWorld

    catalogue_sync()  # post_migrate loads it too; a flushed transactional test database may have lost it
    return ReceiptWorld()


@pytest.fixture
def self_sealed_bundle() -> dict[str, Any]:
    """A well-formed bundle sealed with a throwaway "platform" key that Ingot never registered: every
    check passes on the file's own keys, and every signature fails against Ingot's key registry."""
    from receipts.bundles import build_bundle
    from receipts.chain import issued_data, new_event, seal
    from receipts.signing import generate_private_key, key_id, registered_key_jwk

    platform_key = generate_private_key()
    kid = key_id(platform_key.public_key())
    jwk = registered_key_jwk(platform_key.public_key(), member="Ingot Platform", roles=["platform"],
                             valid_from="2026-01-01T00:00:00Z")
    lot = {"ref": "RMS/GA-2026-001", "metal": "Ga", "form": "ingot", "net_mass_kg": "100.000", "warehouse": "RMS"}
    receipt = {"number": "GA-2026-000001", "metal": "Ga", "grade": None, "form": "ingot", "quantity": "100.000",
               "warehouse": "RMS", "lot": lot["ref"], "holder": "Test Metals Ltd", "status": "active"}
    data = issued_data(metal="Ga", grade=None, form="ingot", quantity="100.000", warehouse="RMS",
                       holder=receipt["holder"], lot=lot, grade_spec=None, attestations=[])
    issued = new_event(receipt=receipt["number"], seq=1, kind="issued", at="2026-02-01T09:00:00Z", data=data,
                       prev_hash=None)
    return build_bundle(receipt=receipt, lot=lot, grade_spec=None, attestations=[],
                        chain=[seal(issued, platform_key, kid)], keys=[jwk], exported_at="2026-02-02T00:00:00Z",
                        platform_key=platform_key, platform_kid=kid)
