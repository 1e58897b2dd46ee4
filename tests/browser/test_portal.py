"""The portal in headless Chromium: sign in and out, lockout, the dashboard's real holdings, the public
bundle verifier, and the vendored chart library."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.factories.members import MemberFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def is_verify_post(response: Any) -> bool:
    return response.url.endswith("/verify/") and response.request.method == "POST"


def test_wrong_password_shows_an_error_and_no_session(page: Page, sign_in: Callable[..., None]) -> None:
    UserFactory(username="ana")
    sign_in(page, "ana", "not-the-password")
    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username and password")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_sign_in_by_keyboard_shows_member_and_held_receipt(page: Page, receipt_world: Any,
                                                           shoot: Callable[[Page, str], None]) -> None:
    member = MemberFactory(name="Shanghai Gallium Co", roles=["producer", "trader"])
    UserFactory(username="sgc", member=member)
    held = receipt_world.receipt(member, quantity="1250.000")
    not_held = receipt_world.receipt(MemberFactory(name="Other Holder Ltd"), quantity="10.000")

    page.goto("/login/")
    # Keyboard only: the username field has focus on arrival, Tab moves to the password, Enter submits.
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type("sgc")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("test-password-123")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile(r"/$"))
    # The first Tab reaches the skip link, which takes focus past the navigation to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    expect(page.get_by_role("heading", level=1)).to_have_text("Shanghai Gallium Co")
    expect(page.locator(".facts")).to_contain_text("Approved")
    expect(page.locator(".facts")).to_contain_text("Producer")
    expect(page.locator(".facts")).to_contain_text("Trader")
    row = page.get_by_role("row", name=re.compile(held.number))
    expect(row).to_contain_text("Gallium")
    expect(row).to_contain_text(held.grade.code)
    expect(row).to_contain_text(receipt_world.warehouse.code)
    expect(row).to_contain_text("Active")
    expect(row.locator("td.num")).to_have_text("1,250.000\xa0kg")
    expect(row.locator("td.num")).to_have_css("text-align", "right")
    expect(page.get_by_text(not_held.number)).to_have_count(0)  # another member's receipt
    # Assets come from our own static files; htmx sends the CSRF token with every request.
    assert page.evaluate("typeof window.htmx") == "object"
    headers = json.loads(page.locator("body").get_attribute("hx-headers") or "{}")
    assert headers["X-CSRFToken"]
    shoot(page, "dashboard")


def test_sign_out_ends_the_session(page: Page, sign_in: Callable[..., None],
                                   shoot: Callable[[Page, str], None]) -> None:
    UserFactory(username="lumen", member=MemberFactory(name="Lumen Displays GmbH"))
    sign_in(page, "lumen")
    expect(page.get_by_role("heading", level=1)).to_have_text("Lumen Displays GmbH")
    expect(page.get_by_text("You hold no open receipts")).to_be_visible()
    shoot(page, "dashboard-empty")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login/$"))
    expect(page.get_by_role("status")).to_contain_text("You are signed out.")
    shoot(page, "login")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))


def test_user_without_member_sees_why_there_is_nothing_to_show(page: Page, sign_in: Callable[..., None]) -> None:
    UserFactory(username="officer", member=None, is_staff=True)
    sign_in(page, "officer")
    expect(page.get_by_role("heading", level=1)).to_have_text("No member organisation")
    expect(page.get_by_role("link", name="admin console")).to_have_attribute("href", "/admin/")


def test_repeated_failures_lock_sign_in_with_a_readable_page(page: Page, settings: Any,
                                                             sign_in: Callable[..., None],
                                                             shoot: Callable[[Page, str], None]) -> None:
    settings.AXES_LOCKOUT_CALLABLE = "trading.views.lockout_response"
    UserFactory(username="baltic")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(page, "baltic", "wrong-password-0")
        expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username and password")
    with page.expect_response(lambda r: r.url.endswith("/login/") and r.request.method == "POST") as answer:
        sign_in(page, "baltic", "wrong-password-0")
    assert answer.value.status == 429
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in temporarily locked")
    expect(page.get_by_role("alert")).to_contain_text("Too many failed sign-in attempts for baltic")
    expect(page.get_by_role("alert")).to_contain_text("locked for 1 hour")
    shoot(page, "lockout")
    # The right password does not get through while locked.
    sign_in(page, "baltic")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign-in temporarily locked")


def test_verify_rejects_malformed_json_with_a_message(page: Page, settings: Any,
                                                      shoot: Callable[[Page, str], None]) -> None:
    settings.DEBUG = True  # the DEMO banner follows DEBUG
    page.goto("/verify/")
    expect(page.get_by_role("note", name="Demonstration data")).to_contain_text("DEMO")
    field = page.get_by_label("or paste the bundle JSON")

    field.fill('{"format": "ingot-receipt-bundle/1", ')
    with page.expect_response(is_verify_post) as answer:
        page.get_by_role("button", name="Verify").click()
    assert answer.value.status == 400
    expect(page.locator("#id_bundle_json_error")).to_contain_text("This is not valid JSON")
    expect(page.get_by_label("or paste the bundle JSON")).to_have_attribute("aria-invalid", "true")
    shoot(page, "verify-malformed")

    page.get_by_label("or paste the bundle JSON").fill("[1, 2, 3]")
    with page.expect_response(is_verify_post) as answer:
        page.get_by_role("button", name="Verify").click()
    assert answer.value.status == 400
    expect(page.locator("#id_bundle_json_error")).to_contain_text("A bundle is a JSON object")

    page.get_by_label("or paste the bundle JSON").fill("")
    with page.expect_response(is_verify_post) as answer:
        page.get_by_role("button", name="Verify").click()  # nothing given
    assert answer.value.status == 400
    expect(page.get_by_role("alert")).to_contain_text("Choose a bundle file or paste the bundle JSON")


def test_verify_refuses_an_oversized_upload(page: Page) -> None:
    page.goto("/verify/")
    page.get_by_label("Bundle file").set_input_files(
        {"name": "huge.json", "mimeType": "application/json", "buffer": b" " * (2 * 1024 * 1024 + 1)})
    with page.expect_response(is_verify_post) as answer:
        page.get_by_role("button", name="Verify").click()
    assert answer.value.status == 413
    expect(page.locator("#id_bundle_file_error")).to_contain_text("the limit is 2.0")


def upload(page: Page, name: str, bundle: dict[str, Any]) -> int:
    page.get_by_label("Bundle file").set_input_files(
        {"name": name, "mimeType": "application/json", "buffer": json.dumps(bundle).encode()})
    with page.expect_response(is_verify_post) as answer:
        page.get_by_role("button", name="Verify").click()
    return answer.value.status


def test_verify_lists_every_check_for_an_issued_receipt(page: Page, receipt_world: Any,
                                                        shoot: Callable[[Page, str], None]) -> None:
    from receipts.bundles import verify_bundle
    from receipts.selectors import jwks, receipt_bundle

    receipt = receipt_world.receipt(MemberFactory(name="Lumen Displays GmbH"), quantity="25.000")
    bundle = receipt_bundle(receipt)
    expected = verify_bundle(bundle, trusted_keys=jwks()["keys"])
    assert expected.ok, expected.failures

    page.goto("/verify/")  # anonymous: no account needed
    expect(page.get_by_role("link", name="published key registry")).to_have_attribute("href", "/.well-known/jwks.json")
    assert upload(page, f"{receipt.number}.json", bundle) == 200
    expect(page.get_by_role("heading", name=f"Verified: {receipt.number}")).to_be_visible()
    rows = page.locator("table.checks tbody tr")
    expect(rows).to_have_count(len(expected.checks))
    for index, check in enumerate(expected.checks):
        expect(rows.nth(index).locator("th")).to_have_text(check.name)
        expect(rows.nth(index).locator(".verdict")).to_have_text("✓ pass")
        expect(rows.nth(index).locator("td.detail")).to_have_text(check.detail)
    expect(page.get_by_role("rowheader", name="attestation 1 (assay): signature")).to_be_visible()
    shoot(page, "verify-ok")

    # The same bundle with its quantity raised in the header: the seal and the chain both object.
    tampered = copy.deepcopy(bundle)
    tampered["receipt"]["quantity"] = "2500.000"
    failures = verify_bundle(tampered, trusted_keys=jwks()["keys"]).failures
    assert {"receipt matches its chain", "bundle seal"} <= {check.name for check in failures}
    page.get_by_label("or paste the bundle JSON").fill(json.dumps(tampered, indent=2))
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", name=re.compile("Not verified"))).to_be_visible()
    failed_rows = page.locator("table.checks tbody tr.check-fail")
    expect(failed_rows).to_have_count(len(failures))
    for row, check in zip(failed_rows.all(), failures, strict=True):
        expect(row.locator("th")).to_have_text(check.name)
        expect(row.locator(".verdict")).to_have_text("✗ fail")
        expect(row.locator("td.detail")).to_have_text(check.detail)
    shoot(page, "verify-failed")


def test_verify_fails_a_bundle_sealed_with_a_key_ingot_never_registered(page: Page,
                                                                        self_sealed_bundle: dict[str, Any]) -> None:
    from receipts.bundles import verify_bundle

    assert verify_bundle(self_sealed_bundle).ok  # consistent in itself...
    page.goto("/verify/")
    assert upload(page, "forged.json", self_sealed_bundle) == 200
    # ...but not signed by Ingot.
    expect(page.get_by_role("heading", name=re.compile("Not verified"))).to_be_visible()
    seal = page.locator("table.checks tbody tr", has=page.get_by_role("rowheader", name="bundle seal", exact=True))
    expect(seal.locator(".verdict")).to_have_text("✗ fail")
    expect(seal.locator("td.detail")).to_contain_text("not in the trusted set")


def test_vendored_chart_library_draws_candles_with_volume(page: Page, live_server: Any,
                                                          shoot: Callable[[Page, str], None]) -> None:
    candles = [
        {"time": f"2026-01-{day:02d}", "open": str(560 + day), "high": str(566 + day), "low": str(556 + day),
         "close": str(562 + day - (day % 3) * 3), "volume": str(100 + day * 7)}
        for day in range(1, 29)
    ]
    static = f"{live_server.url}/static/portal"
    page.set_content(f"""<!doctype html><html lang="en"><head>
        <link rel="stylesheet" href="{static}/css/portal.css"></head><body><main class="wrap">
        <h1>GA-6N-CN daily candles</h1>
        <script id="candles-ga" type="application/json">{json.dumps(candles)}</script>
        <div class="chart" data-candles="candles-ga" role="img" aria-label="Daily candles"></div>
        <script src="{static}/vendor/lightweight-charts/lightweight-charts.standalone.production.js"></script>
        <script src="{static}/js/candles.js"></script></main></body></html>""")
    expect(page.locator(".chart canvas").first).to_be_visible()
    assert page.evaluate("document.querySelector('.chart').dataset.chartMounted") == "1"
    assert page.evaluate("document.querySelector('.chart').ingotChart.panes()[0].getSeries().length") == 2
    shoot(page, "chart")


def test_an_officer_signs_in_to_the_console_with_password_and_code_in_one_step(page: Page) -> None:
    """The console's sign-in asks for username, password and the one-time code on one form. django-otp 1.7
    wants the device chosen from a list it only shows after a first, failed submission ("Please select a
    device."); an officer with one device has nothing to choose, so it is taken."""
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    officer = UserFactory(username="officer", member=None, is_staff=True, is_superuser=True)
    device = TOTPDevice.objects.create(user=officer, name="phone", confirmed=True)
    page.goto("/admin/")
    page.get_by_label("Username").fill("officer")
    page.get_by_label("Password").fill("test-password-123")
    page.get_by_label("OTP Token").fill(f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):06d}")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Review queues and records")


def test_a_wrong_console_code_is_refused_and_an_officer_with_two_devices_chooses_one(page: Page) -> None:
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    officer = UserFactory(username="officer", member=None, is_staff=True, is_superuser=True)
    phone = TOTPDevice.objects.create(user=officer, name="phone", confirmed=True)
    page.goto("/admin/")
    page.get_by_label("Username").fill("officer")
    page.get_by_label("Password").fill("test-password-123")
    page.get_by_label("OTP Token").fill("000000")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Invalid token")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/login/"))

    TOTPDevice.objects.create(user=officer, name="spare", confirmed=True)
    page.get_by_label("Password").fill("test-password-123")
    page.get_by_label("OTP Token").fill(f"{totp(phone.bin_key, step=phone.step, t0=phone.t0, digits=phone.digits):06d}")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Please select a device.")).to_be_visible()  # two devices: which one is asked
    page.get_by_label("OTP Device").select_option(label="phone")
    page.wait_for_timeout(1100)  # django-otp throttles a device for 1 s after one failed code
    page.get_by_label("Password").fill("test-password-123")
    page.get_by_label("OTP Token").fill(f"{totp(phone.bin_key, step=phone.step, t0=phone.t0, digits=phone.digits):06d}")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Review queues and records")
