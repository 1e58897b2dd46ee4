"""Statements are prepared on each connection (server-side binding, config/settings/base.py). A prepared
`SELECT *` fails with "cached plan must not change result type" once a migration adds a column while workers
run, so every hot statement names its columns. Here another connection adds a column to each table order entry
reads while this one has its statements prepared, and order entry goes on."""

from __future__ import annotations

import pytest
from django.db import connections

from tests.conftest import client_for
from tests.factories.members import UserFactory
from tests.factories.receipts import ReceiptWorld
from tests.factories.trading import funded_member, instrument, seller_with
from tests.invariants import assert_value_invariants

pytestmark = pytest.mark.django_db(transaction=True)

# What order entry reads, by the table: token authentication, the instrument, accounts, receipts, orders.
TABLES = ["authtoken_token", "members_user", "members_member", "trading_instrument", "trading_account",
          "receipts_receipt", "trading_order"]


def test_order_entry_goes_on_when_another_process_adds_a_column_to_every_table_it_reads() -> None:
    world = ReceiptWorld()
    instrument()
    seller, _ = seller_with(world, "100.000")
    sells = client_for(UserFactory(member=seller))
    buys = client_for(UserFactory(member=funded_member("1000000.00")))

    def cross(n: int) -> None:
        for client, side, price in ((sells, "sell", "600.00"), (buys, "buy", "605.00")):
            placed = client.post("/api/v1/orders", {"instrument": "GA-6N-CN", "side": side, "quantity_kg": "1",
                                                    "price": price, "client_order_id": f"p-{side}-{n}"})
            assert placed.status_code == 201, placed.content

    for n in range(7):  # psycopg prepares a statement on its 5th run on a connection
        cross(n)
    migration = connections.create_connection("default")  # another process's connection, autocommit
    try:
        with migration.cursor() as cursor:
            for table in TABLES:
                cursor.execute(f"ALTER TABLE {table} ADD COLUMN ingot_probe integer")
        for n in range(7, 10):
            cross(n)
    finally:
        with migration.cursor() as cursor:
            for table in TABLES:
                cursor.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS ingot_probe")
        migration.close()
    assert_value_invariants()
