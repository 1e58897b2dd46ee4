"""The officer's console (OTP-verified session): the review queue, reason actions that call the
services, and read-only records."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from compliance.models import (
    DeclarationStatus,
    EndUseDeclaration,
    ExportLicence,
    Flag,
    FlagKind,
    FlagStatus,
    LicenceDrawdown,
    LicenceStatus,
    ScreeningList,
)
from compliance.services import flag_open, licence_draw, member_screen
from members.models import KycDecision, KycStatus
from tests.factories.compliance import declaration, licence, officer_client
from tests.factories.members import MemberFactory


def act(client: Client, model: str, action: str, pks: list[int], reason: str | None, query: str = "") -> object:
    data: dict[str, object] = {"action": action, "_selected_action": [str(pk) for pk in pks]}
    if reason is not None:
        data.update({"apply": "1", "reason": reason})
    return client.post(reverse(f"admin:compliance_{model}_changelist") + query, data)


@pytest.fixture
def console(db: None) -> Client:
    return officer_client()


@pytest.fixture
def baltic_hit(demo_list: ScreeningList) -> Flag:
    [flag] = member_screen(member=MemberFactory(name="Baltic Rare Metals Trading OÜ (demo)", country="EE"))
    return flag


@pytest.mark.django_db
def test_the_console_needs_a_second_factor() -> None:
    from tests.factories.compliance import officer

    client = Client()
    client.force_login(officer("no-otp"))
    response = client.get(reverse("admin:compliance_flag_changelist"))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.django_db
def test_the_queue_shows_open_flags_by_default_and_filters(console: Client, baltic_hit: Flag) -> None:
    closed = flag_open(kind=FlagKind.OTHER, reference="Closed matter XYZ")
    Flag.objects.filter(pk=closed.pk).update(status=FlagStatus.DISMISSED)
    url = reverse("admin:compliance_flag_changelist")
    page = console.get(url).content.decode()
    assert "Baltic Rare Metals Trading" in page and "Closed matter XYZ" not in page
    assert "Closed matter XYZ" in console.get(url + "?status=all").content.decode()
    assert "Baltic Rare Metals" not in console.get(url + "?kind__exact=other&status=all").content.decode()
    year = baltic_hit.opened_at.year
    assert "Baltic Rare Metals" in console.get(url + f"?opened_at__year={year}").content.decode()
    assert "Baltic Rare Metals" not in console.get(url + f"?opened_at__year={year - 1}").content.decode()


@pytest.mark.django_db
def test_confirm_asks_for_a_reason_then_suspends_the_member(console: Client, baltic_hit: Flag) -> None:
    form = act(console, "flag", "confirm_flag", [baltic_hit.pk], reason=None)
    assert form.status_code == 200 and b"reason" in form.content  # type: ignore[attr-defined]
    assert Flag.objects.get().status == FlagStatus.OPEN

    done = act(console, "flag", "confirm_flag", [baltic_hit.pk], reason="Same party per LV registry")
    assert done.status_code == 302  # type: ignore[attr-defined]
    baltic_hit.refresh_from_db()
    assert (baltic_hit.status, baltic_hit.resolved_by, baltic_hit.resolution_reason) == (
        FlagStatus.CONFIRMED, console.user, "Same party per LV registry")  # type: ignore[attr-defined]
    decision = KycDecision.objects.get(member=baltic_hit.member)
    assert decision.to_status == KycStatus.SUSPENDED and decision.decided_by == console.user  # type: ignore[attr-defined]


@pytest.mark.django_db
def test_dismiss_and_an_illegal_move_is_reported_not_applied(console: Client, baltic_hit: Flag) -> None:
    act(console, "flag", "dismiss_flag", [baltic_hit.pk], reason="Different company")
    baltic_hit.refresh_from_db()
    assert baltic_hit.status == FlagStatus.DISMISSED
    response = console.post(
        reverse("admin:compliance_flag_changelist") + "?status=all",
        {"action": "confirm_flag", "_selected_action": [str(baltic_hit.pk)], "apply": "1", "reason": "oops"},
        follow=True)
    assert b"cannot move from dismissed to confirmed" in response.content
    baltic_hit.refresh_from_db()
    assert baltic_hit.status == FlagStatus.DISMISSED


@pytest.mark.django_db
def test_suspend_member_from_a_flag(console: Client, baltic_hit: Flag) -> None:
    act(console, "flag", "suspend_flagged_member", [baltic_hit.pk], reason="Freeze pending review")
    baltic_hit.member.refresh_from_db()
    assert baltic_hit.member.kyc_status == KycStatus.SUSPENDED
    assert Flag.objects.get().status == FlagStatus.OPEN


@pytest.mark.django_db
def test_approve_and_reject_declarations_and_licences(console: Client) -> None:
    buyer = MemberFactory(country="DE")
    first, second = declaration(buyer, approve=False), declaration(buyer, symbol="In", approve=False)
    act(console, "endusedeclaration", "approve_declaration", [first.pk], reason="End user verified")
    act(console, "endusedeclaration", "reject_declaration", [second.pk], reason="End use unclear")
    assert dict(EndUseDeclaration.objects.values_list("pk", "status")) == {
        first.pk: DeclarationStatus.APPROVED, second.pk: DeclarationStatus.REJECTED}
    assert EndUseDeclaration.objects.get(pk=first.pk).decided_by == console.user  # type: ignore[attr-defined]

    pending = licence(buyer, approve=False)
    act(console, "exportlicence", "approve_licence", [pending.pk], reason="Checked with MOFCOM")
    pending.refresh_from_db()
    assert (pending.status, pending.reason) == (LicenceStatus.APPROVED, "Checked with MOFCOM")
    act(console, "exportlicence", "revoke_licence", [pending.pk], reason="Authority revoked it")
    assert ExportLicence.objects.get(pk=pending.pk).status == LicenceStatus.REVOKED
    # Every licence request left the review queue when it was decided.
    assert not Flag.objects.filter(kind=FlagKind.LICENCE_REQUEST, status=FlagStatus.OPEN).exists()


@pytest.mark.django_db
def test_records_are_read_only(console: Client, baltic_hit: Flag) -> None:
    made = licence(MemberFactory())
    licence_draw(licence=made, quantity_kg="3", reference="W-9")
    drawdown = LicenceDrawdown.objects.get()
    for model, pk in [("flag", baltic_hit.pk), ("exportlicence", made.pk), ("licencedrawdown", drawdown.pk)]:
        change = reverse(f"admin:compliance_{model}_change", args=[pk])
        page = console.get(change)
        assert page.status_code == 200
        assert b'name="_save"' not in page.content
        assert console.post(change, {"status": "confirmed"}).status_code == 403
        assert console.get(reverse(f"admin:compliance_{model}_add")).status_code == 403
        assert console.get(reverse(f"admin:compliance_{model}_delete", args=[pk])).status_code == 403
    baltic_hit.refresh_from_db()
    assert baltic_hit.status == FlagStatus.OPEN


@pytest.mark.django_db
def test_drawdowns_and_the_audit_trail_are_listed(console: Client, baltic_hit: Flag) -> None:
    made = licence(MemberFactory())
    licence_draw(licence=made, quantity_kg="3", reference="W-10")
    assert b"W-10" in console.get(reverse("admin:compliance_licencedrawdown_changelist")).content
    for model in ("memberauditevent", "flagauditevent", "exportlicenceauditevent", "receiptauditevent",
                  "licencedrawdownauditevent", "receiptchainauditevent", "screeninglistauditevent",
                  "endusedeclarationauditevent", "esgrulepackauditevent", "esgevaluationauditevent", "esgrulepack",
                  "esgevaluation", "screeninglist", "screeningentry", "flagtransition"):
        listing = console.get(reverse(f"admin:compliance_{model}_changelist"))
        assert listing.status_code == 200, model
    page = console.get(reverse("admin:compliance_exportlicenceauditevent_changelist")).content.decode()
    assert "action=export_licence_decide" in page and "reason=test approval" in page


@pytest.mark.django_db
def test_the_console_home_counts_what_waits_for_a_decision_and_links_each_queue(console: Client,
                                                                                baltic_hit: Flag) -> None:
    import re
    from html import unescape

    pending = MemberFactory(kyc_status=KycStatus.PENDING)
    declaration(MemberFactory(), approve=False)
    licence(MemberFactory(), approve=False)
    licence(MemberFactory())  # approved: not waiting

    page = unescape(console.get(reverse("admin:index")).content.decode())
    queues = re.findall(r'<th scope="row"><a href="([^"]+)">([^<]+)</a></th>\s*<td class="queue-count">(\d+)</td>', page)
    rows = {label: (href, int(count)) for href, label, count in queues}
    assert rows["Members waiting for KYC review"][1] == 1
    assert rows["Open flags: Sanctions / denied-party hit"][1] == 1
    assert rows["Open flags: ESG rule failure"][1] == 0  # an empty queue is listed too
    assert rows["End-use declarations pending review"][1] == 1
    assert rows["Export licences pending review"][1] == 1
    # Each link opens its queue, holding what was counted.
    kyc = console.get(rows["Members waiting for KYC review"][0])
    assert kyc.status_code == 200 and pending.name in kyc.content.decode()
    hits = console.get(rows["Open flags: Sanctions / denied-party hit"][0])
    assert hits.status_code == 200 and f"#{baltic_hit.pk}" in hits.content.decode()
    for label in ("End-use declarations pending review", "Export licences pending review", "Storage incidents open"):
        listed = console.get(rows[label][0])
        assert listed.status_code == 200 and "?e=1" not in listed.get("Location", ""), label
