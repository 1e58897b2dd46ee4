"""Receipt serials from one sequence on PostgreSQL (receipts/numbering.py) instead of a metal/year counter row
locked to commit. The sequence starts above every serial the counters gave, so no number is issued twice."""

from django.db import migrations
from django.db.models import Max

SEQUENCE = "receipts_receipt_serial"


def create(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite keeps the counter rows
    counter = apps.get_model("receipts", "ReceiptNumberCounter")
    start = (counter.objects.aggregate(last=Max("last"))["last"] or 0) + 1
    schema_editor.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} START WITH {int(start)}")


def drop(apps, schema_editor):  # type: ignore[no-untyped-def]
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP SEQUENCE IF EXISTS {SEQUENCE}")


class Migration(migrations.Migration):
    dependencies = [("receipts", "0003_backfill_lot_nominations")]
    operations = [migrations.RunPython(create, drop)]
