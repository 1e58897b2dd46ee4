"""Who may attest a lot: its warehouse operator, its producer, or a member the operator nominated for that
attestation kind (lot_nominate / lot_nomination_withdraw / lot_register's nominees, attestation_submit's
signer_not_nominated), over the services and the API, the attesters bound into an issued receipt, and the
backfill of nominations for attestations accepted before nominations existed."""

from __future__ import annotations

import importlib
import threading
from datetime import date
from typing import Any

import pytest
from django.apps import apps
from django.db import connections
from django.utils import timezone

from config.errors import ApplicationError, Conflict, NotFound, ValidationFailed
from members.models import Member
from receipts import services
from receipts.bundles import verify_bundle
from receipts.models import Attestation, Lot, LotNomination, Receipt
from receipts.selectors import jwks, receipt_bundle
from tests.conftest import client_for
from tests.factories.members import MemberFactory, UserFactory
from tests.factories.receipts import (
    ReceiptWorld,
    Signer,
    assay_document,
    carbon_footprint_document,
    origin_document,
    recycled_content_document,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> ReceiptWorld:
    return ReceiptWorld()


@pytest.fixture
def producer() -> Member:
    return MemberFactory(roles=["producer", "trader"])


def register(world: ReceiptWorld, *, producer: Member | None = None, nominees: Any = (),
             batch: str = "NOM-1") -> Lot:
    return services.lot_register(
        warehouse=world.warehouse, registered_by=world.operator, metal="Ga", form="ingot", net_mass_kg="100",
        package_count=4, brand="NOM", batch_number=batch, production_date=date(2026, 1, 15), location="A1",
        depositor=producer or MemberFactory(roles=["trader"]), producer=producer, nominees=nominees)


def submit_assay(world: ReceiptWorld, lot: Lot, *, by: Member | None = None) -> Attestation:
    document = assay_document(lot, world.lab)
    return services.attestation_submit(lot=lot, kind="assay", document=document,
                                       signature=world.lab_signer.sign(document), submitted_by=by or world.lab)


def refused(exc_info: pytest.ExceptionInfo[ApplicationError], code: str) -> ApplicationError:
    assert exc_info.value.code == code, exc_info.value
    return exc_info.value


# --- the rule in attestation_submit ---------------------------------------------------------------------

def test_an_assay_by_a_lab_not_nominated_is_refused_and_nothing_is_written(world) -> None:
    lot = register(world)
    for submitter in (world.lab, world.operator):  # the lab itself, or the operator passing it on
        with pytest.raises(ValidationFailed) as exc_info:
            submit_assay(world, lot, by=submitter)
        error = refused(exc_info, "signer_not_nominated")
        assert error.field == "signature" and error.details["signer"] == world.lab.legal_id
        assert error.details["kind"] == "assay"
    assert not Attestation.objects.filter(lot=lot).exists()


def test_an_assay_by_the_nominated_lab_is_accepted(world) -> None:
    lot = register(world)
    services.lot_nominate(lot=lot, by=world.operator, member=world.lab, kinds=["assay"])
    attestation = submit_assay(world, lot)
    assert attestation.signer == world.lab and attestation.lot == lot


def test_a_nomination_for_one_kind_does_not_cover_another(world) -> None:
    verifier = MemberFactory(roles=["verifier"])
    lot = register(world)
    services.lot_nominate(lot=lot, by=world.operator, member=verifier, kinds=["recycled_content"])
    footprint = carbon_footprint_document(lot, verifier)
    with pytest.raises(ValidationFailed) as exc_info:
        services.attestation_submit(lot=lot, kind="carbon_footprint", document=footprint,
                                    signature=Signer(verifier).sign(footprint), submitted_by=verifier)
    refused(exc_info, "signer_not_nominated")
    recycled = recycled_content_document(lot)
    services.attestation_submit(lot=lot, kind="recycled_content", document=recycled,
                                signature=Signer(verifier).sign(recycled), submitted_by=verifier)
    assert list(Attestation.objects.filter(lot=lot).values_list("kind", flat=True)) == ["recycled_content"]


def test_the_producer_and_the_operator_need_no_nomination(world, producer) -> None:
    lot = register(world, producer=producer)
    footprint = carbon_footprint_document(lot, producer)
    services.attestation_submit(lot=lot, kind="carbon_footprint", document=footprint,
                                signature=Signer(producer).sign(footprint), submitted_by=producer)
    origin = origin_document(lot)
    services.attestation_submit(lot=lot, kind="origin", document=origin, signature=Signer(world.operator).sign(origin),
                                submitted_by=world.operator)
    assert sorted(Attestation.objects.filter(lot=lot).values_list("kind", flat=True)) == ["carbon_footprint", "origin"]
    assert not LotNomination.objects.filter(lot=lot).exists()


def test_another_producer_than_the_lots_needs_a_nomination(world, producer) -> None:
    lot = register(world, producer=producer)
    stranger = MemberFactory(roles=["producer"])
    origin = origin_document(lot)
    with pytest.raises(ValidationFailed) as exc_info:
        services.attestation_submit(lot=lot, kind="origin", document=origin, signature=Signer(stranger).sign(origin),
                                    submitted_by=stranger)
    refused(exc_info, "signer_not_nominated")


def test_to_a_submitter_that_is_neither_operator_nor_signer_the_lot_still_does_not_exist(world) -> None:
    lot = register(world)
    with pytest.raises(NotFound):
        submit_assay(world, lot, by=MemberFactory(roles=["assay_lab"]))


def test_role_checks_come_before_the_nomination(world) -> None:
    """A nominated member still needs the role: a trader nominated by mistake... cannot even be nominated, and
    an un-nominated producer signing an assay is refused for its role, as before."""
    lot = register(world)
    impostor = MemberFactory(roles=["producer"])
    document = assay_document(lot, impostor)
    with pytest.raises(ValidationFailed) as exc_info:
        services.attestation_submit(lot=lot, kind="assay", document=document, signature=Signer(impostor).sign(document),
                                    submitted_by=impostor)
    refused(exc_info, "signer_role_not_allowed")


# --- nominating and withdrawing -----------------------------------------------------------------------

def test_only_the_lots_operator_nominates(world, producer) -> None:
    lot = register(world, producer=producer)
    other = ReceiptWorld()
    for outsider in (producer, other.operator, world.lab):
        with pytest.raises(NotFound):
            services.lot_nominate(lot=lot, by=outsider, member=world.lab, kinds=["assay"])
    assert not LotNomination.objects.filter(lot=lot).exists()


@pytest.mark.parametrize(("roles", "kinds", "code"), [
    (["trader"], ["assay"], "nominee_role_not_allowed"),
    (["verifier"], ["assay"], "nominee_role_not_allowed"),
    (["assay_lab"], ["carbon_footprint"], "nominee_role_not_allowed"),
    (["assay_lab"], [], "invalid_kind"),
    (["assay_lab"], ["purity"], "invalid_kind"),
])
def test_a_nominee_needs_a_role_that_may_sign_each_kind(world, roles, kinds, code) -> None:
    lot = register(world)
    with pytest.raises(ValidationFailed) as exc_info:
        services.lot_nominate(lot=lot, by=world.operator, member=MemberFactory(roles=roles), kinds=kinds)
    refused(exc_info, code)
    assert not LotNomination.objects.filter(lot=lot).exists()


def test_nominating_again_is_idempotent(world) -> None:
    lot = register(world)
    first = services.lot_nominate(lot=lot, by=world.operator, member=world.lab, kinds=["assay"])
    again = services.lot_nominate(lot=lot, by=world.operator, member=world.lab, kinds=["assay", "assay"])
    assert [n.pk for n in again] == [n.pk for n in first]
    row = LotNomination.objects.get(lot=lot)
    assert (row.member, row.kind, row.nominated_by, row.is_live) == (world.lab, "assay", world.operator, True)


def test_a_withdrawn_nomination_is_kept_marked_and_stops_the_signer(world) -> None:
    lot = register(world)
    services.lot_nominate(lot=lot, by=world.operator, member=world.lab, kinds=["assay"])
    [withdrawn] = services.lot_nomination_withdraw(lot=lot, by=world.operator, member=world.lab, kinds=["assay"])
    assert withdrawn.withdrawn_by == world.operator and withdrawn.withdrawn_at is not None
    with pytest.raises(ValidationFailed) as exc_info:
        submit_assay(world, lot)
    refused(exc_info, "signer_not_nominated")
    # Nominated again: a new row; the history keeps both.
    services.lot_nominate(lot=lot, by=world.operator, member=world.lab, kinds=["assay"])
    submit_assay(world, lot)
    rows = list(LotNomination.objects.filter(lot=lot).order_by("pk"))
    assert [r.is_live for r in rows] == [False, True]


def test_a_nomination_the_member_has_used_cannot_be_withdrawn(world) -> None:
    verifier = MemberFactory(roles=["verifier"])
    lot = register(world, nominees=[(world.lab, ["assay"]), (verifier, ["carbon_footprint", "recycled_content"])])
    submit_assay(world, lot)
    recycled = recycled_content_document(lot)
    services.attestation_submit(lot=lot, kind="recycled_content", document=recycled,
                                signature=Signer(verifier).sign(recycled), submitted_by=verifier)
    with pytest.raises(Conflict) as exc_info:
        services.lot_nomination_withdraw(lot=lot, by=world.operator, member=world.lab, kinds=["assay"])
    refused(exc_info, "nomination_in_use")
    # All or none: the unused footprint nomination stays too when asked together with the used one.
    with pytest.raises(Conflict) as exc_info:
        services.lot_nomination_withdraw(lot=lot, by=world.operator, member=verifier,
                                         kinds=["carbon_footprint", "recycled_content"])
    assert refused(exc_info, "nomination_in_use").details["kinds"] == ["recycled_content"]
    assert LotNomination.objects.filter(lot=lot, withdrawn_at__isnull=True).count() == 3
    services.lot_nomination_withdraw(lot=lot, by=world.operator, member=verifier, kinds=["carbon_footprint"])
    assert sorted(LotNomination.objects.filter(lot=lot, withdrawn_at__isnull=True).values_list("kind", flat=True)) \
        == ["assay", "recycled_content"]


def test_withdrawing_what_is_not_nominated_or_as_someone_else(world, producer) -> None:
    lot = register(world, producer=producer, nominees=[(world.lab, ["assay"])])
    with pytest.raises(NotFound) as exc_info:
        services.lot_nomination_withdraw(lot=lot, by=world.operator, member=MemberFactory(roles=["verifier"]),
                                         kinds=["carbon_footprint"])
    refused(exc_info, "nomination_not_found")
    with pytest.raises(NotFound) as exc_info:
        services.lot_nomination_withdraw(lot=lot, by=producer, member=world.lab, kinds=["assay"])
    refused(exc_info, "not_found")
    assert LotNomination.objects.get(lot=lot).is_live


def test_registering_a_lot_with_nominees(world) -> None:
    verifier = MemberFactory(roles=["verifier", "recycler"])
    lot = register(world, nominees=[(world.lab, ["assay"]), (verifier, ["carbon_footprint", "recycled_content"])])
    rows = {(n.member_id, n.kind, n.nominated_by_id) for n in LotNomination.objects.filter(lot=lot)}
    assert rows == {(world.lab.pk, "assay", world.operator.pk), (verifier.pk, "carbon_footprint", world.operator.pk),
                    (verifier.pk, "recycled_content", world.operator.pk)}
    submit_assay(world, lot)


def test_a_lot_with_a_bad_nominee_is_not_registered(world) -> None:
    with pytest.raises(ValidationFailed) as exc_info:
        register(world, nominees=[(world.lab, ["assay"]), (MemberFactory(roles=["trader"]), ["origin"])])
    assert refused(exc_info, "nominee_role_not_allowed").field == "nominees[1].member"
    assert not Lot.objects.filter(warehouse=world.warehouse).exists()
    assert not LotNomination.objects.exists()


# --- what a receipt binds ---------------------------------------------------------------------------------

def test_the_issued_event_names_the_attesters_and_the_bundle_verifies(world) -> None:
    receipt = world.receipt(quantity="10.000")
    lot = receipt.lot
    issued = receipt.events.get(seq=1).event["data"]
    assert issued["attesters"] == {"operator": world.operator.legal_id, "producer": None,
                                   "nominated": {"assay": [world.lab.legal_id]}}
    result = verify_bundle(receipt_bundle(receipt), trusted_keys=jwks()["keys"])
    assert result.ok, result.failures
    # A verifier nominated later does not change what the issued receipt says nor its bundle.
    services.lot_nominate(lot=lot, by=world.operator, member=MemberFactory(roles=["verifier"]),
                          kinds=["carbon_footprint"])
    assert verify_bundle(receipt_bundle(Receipt.objects.get(pk=receipt.pk)), trusted_keys=jwks()["keys"]).ok


def test_no_receipt_is_issued_over_an_attestation_whose_signer_is_not_nominated(world) -> None:
    """Only a row that bypassed attestation_submit and the withdrawal rule gets here (an import, a repair):
    the receipt's own bundle would fail, so it is not issued."""
    lot = world.lot(mass="10.000")
    LotNomination.objects.filter(lot=lot).update(withdrawn_at=timezone.now(), withdrawn_by=world.operator)
    with pytest.raises(Conflict) as exc_info:
        services.receipt_issue(lot=lot, holder=lot.depositor, quantity_kg="10.000", issued_by=world.operator)
    refused(exc_info, "attestation_signer_not_nominated")
    assert not Receipt.objects.filter(lot=lot).exists()


def test_the_migration_nominates_the_signers_of_earlier_attestations(world, producer) -> None:
    lot = register(world, producer=producer, nominees=[(world.lab, ["assay"])])
    attestation = submit_assay(world, lot)
    origin = origin_document(lot)
    services.attestation_submit(lot=lot, kind="origin", document=origin, signature=Signer(producer).sign(origin),
                                submitted_by=producer)
    LotNomination.objects.all().delete()  # as before nominations existed
    backfill = importlib.import_module("receipts.migrations.0003_backfill_lot_nominations").backfill
    backfill(apps, None)
    backfill(apps, None)  # a second run adds nothing
    [row] = LotNomination.objects.filter(lot=lot)  # the producer needs none
    assert (row.member, row.kind, row.nominated_by, row.nominated_at, row.is_live) == (
        world.lab, "assay", world.operator, attestation.created_at, True)


# --- the API --------------------------------------------------------------------------------------------

@pytest.fixture
def wh(world: ReceiptWorld) -> Any:
    return client_for(UserFactory(member=world.operator))


def test_api_nominate_list_withdraw_and_the_lot_detail(world, wh) -> None:
    lot = register(world)
    verifier = MemberFactory(roles=["verifier"])
    url = f"/api/v1/lots/{lot.pk}/nominations"
    made = wh.post(url, {"member": world.lab.legal_id, "kinds": ["assay"]})
    assert made.status_code == 201, made.content
    assert [(n["member"], n["kind"], n["live"], n["nominated_by"]) for n in made.json()] == [
        (world.lab.legal_id, "assay", True, world.operator.legal_id)]
    assert wh.post(url, {"member": verifier.legal_id, "kinds": ["carbon_footprint"]}).status_code == 201
    withdrawn = wh.post(f"{url}/withdraw", {"member": verifier.legal_id, "kinds": ["carbon_footprint"]}, key=None)
    assert withdrawn.status_code == 200, withdrawn.content
    assert withdrawn.json()[0]["live"] is False and withdrawn.json()[0]["withdrawn_by"] == world.operator.legal_id
    listed = wh.get(url).json()
    assert [(n["member"], n["kind"], n["live"]) for n in listed] == [
        (world.lab.legal_id, "assay", True), (verifier.legal_id, "carbon_footprint", False)]
    assert wh.get(f"/api/v1/lots/{lot.pk}").json()["nominations"] == listed


def test_api_nominating_needs_an_idempotency_key_and_replays(world, wh) -> None:
    lot = register(world)
    url = f"/api/v1/lots/{lot.pk}/nominations"
    body = {"member": world.lab.legal_id, "kinds": ["assay"]}
    assert wh.post(url, body, key=None).status_code == 400
    first = wh.post(url, body, key="nominate-lab-1")
    replay = wh.post(url, body, key="nominate-lab-1")
    assert first.status_code == replay.status_code == 201 and first.content == replay.content
    assert LotNomination.objects.filter(lot=lot).count() == 1


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"member": "NO-SUCH-MEMBER", "kinds": ["assay"]}, 400, "unknown_member"),
    ({"member": "<trader>", "kinds": ["assay"]}, 400, "nominee_role_not_allowed"),
    ({"member": "<lab>", "kinds": ["purity"]}, 400, "invalid_input"),
    ({"member": "<lab>", "kinds": []}, 400, "invalid_input"),
    ({"member": "<lab>"}, 400, "invalid_input"),
])
def test_api_nomination_errors(world, wh, body, status, code) -> None:
    lot = register(world)
    names = {"<lab>": world.lab.legal_id, "<trader>": MemberFactory(roles=["trader"]).legal_id}
    body = {**body, "member": names.get(body["member"], body["member"])}
    response = wh.post(f"/api/v1/lots/{lot.pk}/nominations", body)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert not LotNomination.objects.exists()


def test_api_only_the_operator_nominates(world, producer) -> None:
    lot = register(world, producer=producer)
    body = {"member": world.lab.legal_id, "kinds": ["assay"]}
    url = f"/api/v1/lots/{lot.pk}/nominations"
    depositor = client_for(UserFactory(member=lot.depositor))  # sees the lot, does not run its warehouse
    response = depositor.post(url, body)
    assert response.status_code == 403 and response.json()["code"] == "not_warehouse_operator"
    for outsider in (ReceiptWorld().operator, world.lab):
        client = client_for(UserFactory(member=outsider))
        assert client.post(url, body).status_code == 404
        assert client.post(f"{url}/withdraw", body).status_code == 404
        assert client.get(url).status_code == 404
    assert client_for(UserFactory(member=world.operator)).post(f"/api/v1/lots/{lot.pk + 10_000}/nominations",
                                                               body).status_code == 404
    assert not LotNomination.objects.exists()


def test_api_withdrawal_errors(world, wh) -> None:
    lot = register(world, nominees=[(world.lab, ["assay"])])
    submit_assay(world, lot)
    url = f"/api/v1/lots/{lot.pk}/nominations/withdraw"
    in_use = wh.post(url, {"member": world.lab.legal_id, "kinds": ["assay"]}, key=None)
    assert in_use.status_code == 409 and in_use.json()["code"] == "nomination_in_use"
    missing = wh.post(url, {"member": world.lab.legal_id, "kinds": ["origin"]}, key=None)
    assert missing.status_code == 404 and missing.json()["code"] == "nomination_not_found"


def test_api_register_with_nominees_and_attest(world, wh) -> None:
    body = {"metal": "Ga", "form": "ingot", "net_mass_kg": "100.000", "package_count": 4, "brand": "NOM",
            "batch_number": "NOM-API-1", "production_date": "2026-01-15", "location": "A1",
            "depositor": MemberFactory(roles=["trader"]).legal_id}
    url = f"/api/v1/warehouses/{world.warehouse.code}/lots"
    unknown = wh.post(url, {**body, "nominees": [{"member": "NO-SUCH-LAB", "kinds": ["assay"]}]})
    assert unknown.status_code == 400 and unknown.json()["code"] == "unknown_member"
    assert unknown.json()["details"]["field"] == "nominees[0].member"
    assert not Lot.objects.filter(batch_number="NOM-API-1").exists()

    made = wh.post(url, {**body, "nominees": [{"member": world.lab.legal_id, "kinds": ["assay"]}]})
    assert made.status_code == 201, made.content
    assert [(n["member"], n["kind"]) for n in made.json()["nominations"]] == [(world.lab.legal_id, "assay")]
    lot = Lot.objects.get(pk=made.json()["id"])
    lab = client_for(UserFactory(member=world.lab))
    document = assay_document(lot, world.lab)
    attached = lab.post(f"/api/v1/lots/{lot.pk}/attestations",
                        {"kind": "assay", "document": document, "signature": world.lab_signer.sign(document)})
    assert attached.status_code == 201, attached.content

    other_lab = MemberFactory(roles=["assay_lab"])
    document = assay_document(lot, other_lab)
    refused_body = client_for(UserFactory(member=other_lab)).post(
        f"/api/v1/lots/{lot.pk}/attestations",
        {"kind": "assay", "document": document, "signature": Signer(other_lab).sign(document)})
    assert refused_body.status_code == 400 and refused_body.json()["code"] == "signer_not_nominated"
    assert refused_body.json()["details"]["field"] == "signature"
    assert Attestation.objects.filter(lot=lot).count() == 1


def test_the_schema_documents_the_nomination_endpoints(world) -> None:
    from django.test import Client

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/lots/{id}/nominations"])
    assert "post" in paths["/api/v1/lots/{id}/nominations/withdraw"]
    components = schema["components"]["schemas"]

    def component(ref: str) -> dict[str, Any]:
        return components[ref.rsplit("/", 1)[1]]

    register_body = paths["/api/v1/warehouses/{code}/lots"]["post"]["requestBody"]["content"]["application/json"]
    nominees = component(register_body["schema"]["$ref"])["properties"]["nominees"]
    nominee = component(nominees["items"]["$ref"])
    assert set(nominee["properties"]) == {"member", "kinds"}
    assert component(nominee["properties"]["kinds"]["items"]["$ref"])["enum"] == [
        "assay", "carbon_footprint", "recycled_content", "origin"]
    assert "nominations" in component("#/LotDetailOutput")["properties"]


# --- a withdrawal racing an attestation ---------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_withdrawal_and_an_attestation_racing_never_both_succeed() -> None:
    """The operator withdraws the lab's nomination while the lab submits its assay, on separate connections:
    whichever takes the lot's row lock first wins, and the other is refused (never an attestation by a
    signer no longer nominated)."""
    world = ReceiptWorld()
    outcomes: list[tuple[str, str]] = []
    for n in range(6):
        lot = register(world, nominees=[(world.lab, ["assay"])], batch=f"RACE-{n}")
        barrier = threading.Barrier(2)
        results: dict[str, str] = {}

        def withdraw(lot: Lot = lot, barrier: threading.Barrier = barrier, results: dict[str, str] = results) -> None:
            try:
                barrier.wait()
                services.lot_nomination_withdraw(lot=lot, by=world.operator, member=world.lab, kinds=["assay"])
                results["withdraw"] = "ok"
            except ApplicationError as exc:
                results["withdraw"] = exc.code
            finally:
                connections.close_all()

        def attest(lot: Lot = lot, barrier: threading.Barrier = barrier, results: dict[str, str] = results) -> None:
            try:
                barrier.wait()
                submit_assay(world, lot)
                results["attest"] = "ok"
            except ApplicationError as exc:
                results["attest"] = exc.code
            finally:
                connections.close_all()

        threads = [threading.Thread(target=withdraw), threading.Thread(target=attest)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        outcome = (results["withdraw"], results["attest"])
        assert outcome in {("ok", "signer_not_nominated"), ("nomination_in_use", "ok")}, outcome
        live = LotNomination.objects.filter(lot=lot, withdrawn_at__isnull=True).exists()
        assert live == Attestation.objects.filter(lot=lot).exists()
        outcomes.append(outcome)
    assert len(outcomes) == 6
