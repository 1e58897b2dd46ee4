"""Attestations accepted before nominations existed were signed by members the warehouse let attest the lot
then: record each such signer (neither the lot's operator nor its producer) as nominated for that kind, by
the operator, as of its first attestation. Without this a lot attested earlier could not issue another
receipt (the issued event would name attesters its own attestations contradict)."""

from django.db import migrations


def backfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    Attestation = apps.get_model("receipts", "Attestation")
    LotNomination = apps.get_model("receipts", "LotNomination")
    first: dict[tuple[int, int, str], tuple[object, int]] = {}
    rows = (Attestation.objects.select_related("lot__warehouse").order_by("created_at", "pk")
            .values_list("lot_id", "signer_id", "kind", "created_at", "lot__warehouse__operator_id",
                         "lot__producer_id"))
    for lot_id, signer_id, kind, created_at, operator_id, producer_id in rows.iterator():
        if signer_id in (operator_id, producer_id):
            continue
        first.setdefault((lot_id, signer_id, kind), (created_at, operator_id))
    live = set(LotNomination.objects.filter(withdrawn_at__isnull=True).values_list("lot_id", "member_id", "kind"))
    LotNomination.objects.bulk_create([
        LotNomination(lot_id=lot_id, member_id=member_id, kind=kind, nominated_by_id=operator_id,
                      nominated_at=created_at)
        for (lot_id, member_id, kind), (created_at, operator_id) in first.items()
        if (lot_id, member_id, kind) not in live
    ], batch_size=1000)


class Migration(migrations.Migration):

    dependencies = [
        ("receipts", "0002_lotnomination"),
    ]

    operations = [
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
