"""Reads of the receipts app: what a member may see, a receipt's bundle, the published keys."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db.models import Exists, OuterRef, Q, QuerySet, Sum
from django.utils import timezone

from members.keys import b64url_decode
from members.models import Member, SigningKey
from receipts import bundles
from receipts.canonical import utc_stamp
from receipts.models import (
    OPEN_STATUSES,
    Attestation,
    Lot,
    LotNomination,
    Receipt,
    ReceiptEvent,
    ReceiptStatus,
    StorageIncident,
    Warehouse,
)
from receipts.platform_keys import platform_signer
from receipts.services import lot_document
from receipts.signing import registered_key_jwk


def receipts_visible_to(member: Member) -> QuerySet[Receipt]:
    """A holder sees its receipts; a warehouse operator sees the receipts of its warehouses."""
    return Receipt.objects.filter(Q(holder=member) | Q(lot__warehouse__operator=member)).select_related(
        "lot__warehouse", "lot__metal", "grade", "holder")


def lots_visible_to(member: Member) -> QuerySet[Lot]:
    """The operator and the depositor see a lot, and so does whoever holds a receipt on it: a holder may
    read what its title rests on."""
    held = Receipt.objects.filter(lot=OuterRef("pk"), holder=member)
    return Lot.objects.filter(Q(warehouse__operator=member) | Q(depositor=member) | Exists(held)).select_related(
        "warehouse", "metal", "grade", "producer", "depositor")


def nominations_of(lot: Lot) -> QuerySet[LotNomination]:
    """Everyone the lot's operator nominated to attest it, withdrawn nominations included, oldest first."""
    return lot.nominations.select_related("member", "nominated_by", "withdrawn_by").order_by("nominated_at", "pk")


def warehouses_of(member: Member) -> QuerySet[Warehouse]:
    return Warehouse.objects.filter(operator=member)


def open_incidents_of(receipt: Receipt) -> QuerySet[StorageIncident]:
    """Storage incidents still open that flag this receipt."""
    return StorageIncident.objects.filter(receipts=receipt, closed_at__isnull=True).order_by("opened_at", "pk")


def lot_quantities(lot: Lot) -> dict[str, Decimal]:
    """How much of the lot is under open receipts, has been withdrawn, and may still be receipted."""
    rows = dict(Receipt.objects.filter(lot=lot).exclude(status=ReceiptStatus.SPLIT)
                .values_list("status").annotate(total=Sum("quantity_kg")).order_by())
    withdrawn = rows.pop(ReceiptStatus.WITHDRAWN, Decimal(0))
    open_kg = sum((total for status, total in rows.items() if status in OPEN_STATUSES), Decimal(0))
    return {"open_kg": open_kg, "withdrawn_kg": withdrawn, "available_kg": lot.net_mass_kg - open_kg - withdrawn}


def _stamp(moment: Any) -> str | None:
    return utc_stamp(moment) if moment is not None else None


def key_jwk(key: SigningKey) -> dict[str, Any]:
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(key.public_key))
    # roles.all() rather than role_set(): it uses a prefetch when the caller made one (jwks() does).
    roles = sorted({r.role for r in key.member.roles.all()})
    return registered_key_jwk(public, member=key.member.legal_id, roles=roles,
                              valid_from=utc_stamp(key.valid_from), valid_to=_stamp(key.valid_to),
                              revoked_at=_stamp(key.revoked_at))


def jwks(kids: Iterable[str] | None = None) -> dict[str, Any]:
    """Every registered key, published: old and revoked keys stay so old signatures can be judged.
    With `kids`, only those keys (what a verifier needs to judge one bundle)."""
    keys = SigningKey.objects.select_related("member").prefetch_related("member__roles").order_by("pk")
    if kids is not None:
        keys = keys.filter(kid__in=list(kids))
    return {"keys": [key_jwk(k) for k in keys]}


def _sealed(events: QuerySet[ReceiptEvent] | list[ReceiptEvent]) -> list[dict[str, Any]]:
    return [{"event": e.event, "hash": e.hash, "sig": e.signature} for e in events]


def receipt_bundle(receipt: Receipt) -> dict[str, Any]:
    """The receipt as one canonical, sealed JSON bundle that anyone can verify offline."""
    lineage: list[Receipt] = []
    node = receipt
    while node.parent_id is not None:
        node = Receipt.objects.get(pk=node.parent_id)
        lineage.append(node)
    lineage.reverse()  # root first
    root = lineage[0] if lineage else receipt
    bound = {item["hash"] for item in root.events.get(seq=1).event["data"].get("attestations", [])}
    attestations = [a for a in Attestation.objects.filter(lot_id=receipt.lot_id).order_by("kind", "created_at", "pk")
                    if a.binding_hash in bound]
    ancestors = []
    for ancestor in lineage:
        ancestors.append({"receipt": ancestor.number, "chain": _sealed(list(ancestor.events.order_by("seq")))})
    chain = _sealed(list(receipt.events.order_by("seq")))
    kids: set[str] = {str(a.signature["kid"]) for a in attestations}  # type: ignore[index]  # JSONField
    for sealed in [*chain, *(s for a in ancestors for s in a["chain"])]:
        kids.add(sealed["sig"]["kid"])  # type: ignore[index]  # a sealed event: {"event", "hash", "sig"}
    key, kid = platform_signer()
    kids.add(kid)
    keys = jwks(kids)["keys"]
    lot = receipt.lot
    header = {
        "number": receipt.number, "metal": lot.metal.symbol, "grade": receipt.grade.code if receipt.grade else None,
        "form": lot.form, "quantity": f"{receipt.quantity_kg:.3f}", "warehouse": lot.warehouse.code,
        "lot": lot.reference, "holder": receipt.holder.legal_id, "status": receipt.status,
    }
    return bundles.build_bundle(
        receipt=header, lot=lot_document(lot), grade_spec=receipt.grade.spec if receipt.grade else None,
        attestations=[{"type": a.kind, "document": a.document, "signature": a.signature} for a in attestations],
        chain=chain, ancestors=ancestors, keys=keys, exported_at=utc_stamp(timezone.now()),
        platform_key=key, platform_kid=kid)
