"""Order entry, cancellation and delivery-versus-payment settlement.

One transaction per order: lock the instrument (serialising its book across processes), reserve what
the order needs (cash held for a buy, receipts encumbered for a sell), match in the engine, and settle
every fill — receipts to the buyer, cash to the seller, fees to the platform — before commit.
Market orders are protected: they run as IOC limits at the edge of the instrument's price band.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal, InvalidOperation
from typing import Any, cast

from django.db import connection, transaction
from django.utils import timezone

from compliance import policy
from config.after_commit import on_commit_merged
from config.db import (
    columns,
    for_update,
    pipelined,
    send_insert_rows,
    send_select_rows,
    update_rows,
    write_rows,
)
from config.errors import Conflict, NotFound, Unprocessable, ValidationFailed
from members.models import Member
from receipts.lock_objects import order_receipts_locked
from receipts.models import Receipt, ReceiptStatus
from receipts.services import (
    receipt_withdrawal_request,
    receipts_deliver,
    receipts_encumber,
    receipts_release,
)
from trading import book_cache, selectors
from trading.conversions import to_kg, to_price, to_ticks, to_units
from trading.engine import Execution
from trading.ledger import AVAILABLE, HELD, Entry, member_account, post, post_many, system_account
from trading.lock_objects import cash_accounts_locked, instrument_locked
from trading.models import (
    LIVE_ORDER_STATUSES,
    Account,
    AccountKind,
    BookCommand,
    Instrument,
    InstrumentStatus,
    Order,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
    Trade,
)

log = logging.getLogger(__name__)
CENT = Decimal("0.01")
BPS = Decimal(10000)


class OrderRejected(ValidationFailed):
    default_code = "order_rejected"


@dataclass
class OrderResult:
    order: Order
    trades: list[Trade] = field(default_factory=list)
    cancelled_order_ids: list[int] = field(default_factory=list)
    replayed: bool = False


def _plain(value: Decimal | None) -> str:
    """2.5000 -> "2.5", 600.0000 -> "600": how a person writes a price or a size."""
    return "" if value is None else f"{value.normalize():f}"


def _ceil_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_CEILING)


def _floor_cents(amount: Decimal) -> Decimal:
    # Per-fill amounts round down (in the members' favour) so the fills of an order never need more
    # than the cash held for it, which rounds up.
    return amount.quantize(CENT, rounding=ROUND_DOWN)


def buy_hold(quantity_kg: Decimal, limit: Decimal, instrument: Instrument) -> Decimal:
    notional = _ceil_cents(quantity_kg * limit)
    fee_bps = max(instrument.maker_fee_bps, instrument.taker_fee_bps)
    return notional + _ceil_cents(notional * fee_bps / BPS)


# --- validation (check_*) --------------------------------------------------------------------------

def _decimal(value: Any, name: str) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise OrderRejected(f"{name} must be a number.", code="invalid_input", field=name) from exc
    if not number.is_finite():
        raise OrderRejected(f"{name} must be a number.", code="invalid_input", field=name)
    return number


@dataclass(frozen=True)
class OrderTicket:
    side: str
    order_type: str
    tif: str
    quantity_kg: Decimal
    price: Decimal | None  # the limit; for market orders the band edge they are protected by
    engine_price: int


def check_order(*, instrument: Instrument, side: str, order_type: str, tif: str, quantity_kg: Any,
                price: Any) -> OrderTicket:
    """Everything about an order that can be judged without touching balances or receipts."""
    if side not in Side.values:
        raise OrderRejected("side must be buy or sell.", code="invalid_side", field="side")
    if order_type not in OrderType.values:
        raise OrderRejected("order_type must be limit or market.", code="invalid_order_type", field="order_type")
    if tif not in TimeInForce.values:
        raise OrderRejected("tif must be GTC, IOC or FOK.", code="invalid_tif", field="tif")
    if instrument.status != InstrumentStatus.OPEN:
        raise Conflict(f"{instrument.code} is halted.", code="instrument_halted")
    quantity = _decimal(quantity_kg, "quantity_kg")
    if quantity <= 0:
        raise OrderRejected("quantity_kg must be more than zero.", code="invalid_quantity", field="quantity_kg")
    if quantity % instrument.lot_size_kg != 0:
        raise OrderRejected(f"quantity_kg must be a multiple of the lot size {_plain(instrument.lot_size_kg)} kg.",
                            code="off_lot", field="quantity_kg")
    if order_type == OrderType.MARKET:
        if price not in (None, ""):
            raise OrderRejected("A market order takes no price.", code="invalid_input", field="price")
        edge = instrument.band_high if side == Side.BUY else instrument.band_low
        if edge is None:
            raise Conflict("Market orders need a reference price band; none is published yet.",
                           code="no_reference_price")
        return OrderTicket(side, order_type, TimeInForce.FOK if tif == TimeInForce.FOK else TimeInForce.IOC,
                           quantity, edge, to_ticks(edge, instrument))
    if price in (None, ""):
        raise OrderRejected("A limit order needs a price.", code="price_required", field="price")
    limit = _decimal(price, "price")
    if limit <= 0:
        raise OrderRejected("price must be more than zero.", code="invalid_price", field="price")
    if limit % instrument.tick_size != 0:
        raise OrderRejected(f"price must be a multiple of the tick {_plain(instrument.tick_size)}.", code="off_tick",
                            field="price")
    if instrument.band_low is not None and instrument.band_high is not None \
            and not instrument.band_low <= limit <= instrument.band_high:
        raise OrderRejected(f"price is outside today's band {_plain(instrument.band_low)}–{_plain(instrument.band_high)}.",
                            code="out_of_band", field="price",
                            details={"band_low": str(instrument.band_low), "band_high": str(instrument.band_high)})
    return OrderTicket(side, order_type, tif, quantity, limit, to_ticks(limit, instrument))


@functools.cache
def _labelled(label: str) -> tuple[str, tuple[Any, ...]]:
    """The SQL and parameters of "the receipts holding ESG label `label`" (compliance's rule, one query of
    EXISTS subqueries), compiled once per process: its parameters are constants of the rule, not of the order."""
    from compliance.selectors import receipts_with_label

    return receipts_with_label(label).values("pk").query.sql_with_params()


def eligible_receipts(member: Member, instrument: Instrument, *, lock: bool = False) -> list[Receipt]:
    """The member's receipts that may back a sell on this instrument, oldest first: active, of its grade, in
    an approved warehouse of its region and, on an ESG instrument, holding its label. With `lock`, read and
    locked in one statement (pk order, as every receipt lock); order entry's read. One plain statement: the
    queryset with its joins and label subquery compiled anew for every sell cost ~1.5 ms."""
    return send_eligible_receipts(member, instrument, lock=lock)()


def send_eligible_receipts(member: Member, instrument: Instrument, *,
                           lock: bool = False) -> Callable[[], list[Receipt]]:
    """`eligible_receipts` in two steps (config.db.send_select_rows): sent now, read by the function returned."""
    params: list[Any] = [member.pk, instrument.grade_id, ReceiptStatus.ACTIVE, instrument.region]
    labelled = ""
    if instrument.esg_class:
        sub, sub_params = _labelled(instrument.esg_class)
        labelled = f" AND r.id IN ({sub})"
        params.extend(sub_params)
    order = f" ORDER BY r.id{for_update('r')}" if lock else " ORDER BY r.issued_at, r.id"
    sql = (f"SELECT {columns(Receipt, 'r')} FROM receipts_receipt r "  # noqa: S608  # nosec B608 - columns from meta, compiled label rule
           "JOIN receipts_lot l ON l.id = r.lot_id JOIN receipts_warehouse w ON w.id = l.warehouse_id "
           f"WHERE r.holder_id = %s AND r.grade_id = %s AND r.status = %s AND w.region = %s AND w.approved"
           f"{labelled}{order}")
    rows = send_select_rows(sql, params, Receipt)

    def read() -> list[Receipt]:
        receipts = [row[0] for row in rows()]
        for receipt in receipts:
            receipt.holder = member  # what the query filtered on: no join for it
        if lock:
            receipts.sort(key=lambda r: (r.issued_at, r.pk))
        return receipts

    return read


# --- placing (do_*) ----------------------------------------------------------------------------------------

def order_place(*, member: Member, instrument: Instrument, side: str, order_type: str, tif: str,
                quantity_kg: Any, price: Any, client_order_id: str, savepoint: bool = True,
                locked: bool = False, delivery_countries: Sequence[str] | None = None) -> OrderResult:
    """Accept, match and settle one order. Takes the instrument's row lock, then accounts and receipts.

    Inside a caller's transaction the order runs in a savepoint, so a refusal leaves the caller's transaction
    usable. `savepoint=False` when the caller rolls its whole transaction back on any error anyway (the API's
    Idempotency-Key wrapper): the savepoint would cost two statements per order for nothing.

    `locked`: the caller read `instrument` with its row lock in the current transaction
    (`selectors.instrument_for_order(code, lock=True)`, the API's read): it is not read and locked again.
    `delivery_countries`: where a buy may be delivered from, if the caller read it with the instrument (that
    read gives it); otherwise read here."""
    if not client_order_id or len(client_order_id) > 64:
        raise OrderRejected("client_order_id is required (at most 64 characters).", code="invalid_client_order_id",
                            field="client_order_id")
    ticket = check_order(instrument=instrument, side=side, order_type=order_type, tif=tif,
                         quantity_kg=quantity_kg, price=price)
    policy.require(policy.can_trade(member))
    if side == Side.BUY:
        # Delivery may come from any approved warehouse of the region: the buyer must be cleared for each.
        if delivery_countries is None:
            delivery_countries = selectors.delivery_countries(instrument.region)
        for country in delivery_countries:
            policy.require(policy.can_buy(member, instrument.grade.metal, country))
    try:
        with transaction.atomic(savepoint=savepoint):
            instrument = instrument if locked else instrument_locked(instrument.pk)
            # Under the lock, the writes are not waited for: PostgreSQL runs them while the order's Python goes on
            # (matching, signing the receipts' events); the block's end waits for them, inside this transaction.
            with pipelined():
                return _place_locked(member, instrument, ticket, client_order_id)
    except BaseException:
        book_cache.drop(instrument.pk)
        raise


def _place_locked(member: Member, instrument: Instrument, ticket: OrderTicket, client_order_id: str) -> OrderResult:
    """The order under its instrument's row lock; `instrument` was read with the lock."""
    cached = book_cache.book_for(instrument)  # before the insert: a rebuilt book must not hold this order yet
    seq = instrument.book_seq + 1
    hold = buy_hold(ticket.quantity_kg, ticket.price or Decimal(0), instrument) if ticket.side == Side.BUY \
        else Decimal(0)
    command = BookCommand(instrument=instrument, seq=seq, kind="submit", owner=member.pk, side=ticket.side,
                          quantity=to_units(ticket.quantity_kg), price=ticket.engine_price, tif=ticket.tif)
    order, inserted = _order_insert(member, instrument, ticket, client_order_id, seq=seq, hold=hold, command=command)
    # A sell's receipts are read and locked in the same round trip as the insert (both sent, then read).
    receipts = send_eligible_receipts(member, instrument, lock=True) if ticket.side == Side.SELL else None
    if not inserted():
        if receipts is not None:
            receipts()  # read and dropped: a replay encumbers nothing
        existing = Order.objects.get(member=member, client_order_id=client_order_id)
        # A replay is the same order: a market order's protective price is the band edge of the day, so it
        # is compared as "no limit".
        same = (existing.instrument_id == instrument.pk and existing.side == ticket.side
                and existing.quantity_kg == ticket.quantity_kg and existing.order_type == ticket.order_type
                and existing.tif == ticket.tif
                and existing.price == (ticket.price if ticket.order_type == OrderType.LIMIT else None))
        if not same:
            raise Unprocessable("client_order_id was already used for a different order.",
                                code="client_order_id_reused")
        return OrderResult(order=existing, trades=list(Trade.objects.filter(
            buy_order=existing) | Trade.objects.filter(sell_order=existing)), replayed=True)
    if instrument.status != InstrumentStatus.OPEN:
        raise Conflict(f"{instrument.code} is halted.", code="instrument_halted")  # the insert rolls back
    # Cash moves in one batch of journal entries at the end (hold, trades, releases; ledger.post_many, in
    # _settle): the buyer's hold is checked there before anything is written, and a refusal rolls the order
    # back whole.
    if receipts is not None:
        receipts_encumber(receipts=receipts(), quantity_kg=ticket.quantity_kg, order_ref=f"O{order.pk}")

    book_cache.mark_tentative(instrument.pk, cached)
    execution = cached.book.submit(order.pk, member.pk, ticket.side, command.quantity, command.price, command.tif)
    cached.seq = instrument.book_seq = seq
    result = OrderResult(order=order)
    _settle(instrument, order, execution, result)
    if result.trades:
        on_commit_merged(("candles", instrument.pk), [instrument.pk], _fold_candles)
    return result


def _log_command(instrument: Instrument, command: BookCommand) -> None:
    """Append `command` (its seq the instrument's next) to the book's command log and move the instrument's
    `book_seq` to it, in one statement. The caller holds the instrument's row lock."""
    write_rows(updates=_command_log(instrument, command, command.order_id))
    instrument.book_seq = command.seq


def _command_log(instrument: Instrument, command: BookCommand, order_id: int | None) -> list[tuple[str, list[Any]]]:
    """The writes that append `command` to the book's command log and move the instrument's `book_seq` to its
    seq. `order_id` None: the command's order is the row inserted by the same statement (`insert_rows(then=...)`
    reads it from `inserted`), and when that insert wrote nothing (a replay) neither write does anything."""
    postgresql = connection.vendor == "postgresql"
    if order_id is None:
        order, source, guard, order_params = "id", " FROM inserted", " AND EXISTS (SELECT 1 FROM inserted)", []
        order_value = "(SELECT id FROM inserted)"
    else:
        order, source, guard, order_params = "%s", "", "", [order_id]
        order_value = "%s::bigint" if postgresql else "%s"
    log = (f"INSERT INTO trading_bookcommand (instrument_id, seq, kind, order_id, owner, side, quantity, price, tif) "  # noqa: S608  # nosec B608 - fixed fragments
           f"SELECT %s, %s, %s, {order}, %s, %s, %s, %s, %s{source}",
           [instrument.pk, command.seq, command.kind, *order_params, command.owner, command.side, command.quantity,
            command.price, command.tif])
    # The same command, as the instrument's `last_command` (book_cache catches a process one behind up from it).
    # PostgreSQL needs the parameters' types (jsonb_build_array takes any); SQLite has no casts.
    last = (f"jsonb_build_array(%s::bigint, %s::text, {order_value}, %s::bigint, %s::text, %s::bigint, %s::bigint, "
            "%s::text)") if postgresql else f"json_array(%s, %s, {order_value}, %s, %s, %s, %s, %s)"
    moved = (f"UPDATE trading_instrument SET book_seq = %s, last_command = {last} WHERE id = %s{guard}",  # noqa: S608  # nosec B608 - fixed fragments
             [command.seq, command.seq, command.kind, *order_params, command.owner, command.side, command.quantity,
              command.price, command.tif, instrument.pk])
    return [log, moved]


def _order_insert(member: Member, instrument: Instrument, ticket: OrderTicket, client_order_id: str, *, seq: int,
                  hold: Decimal, command: BookCommand) -> tuple[Order, Callable[[], bool]]:
    """Send the insert of the order, which inserts nothing when the member already has one with this client order
    id: one statement is both the replay check and the insert. Returns the order and what reads whether it was
    inserted (config.db.send_insert_rows: the caller may send more before reading). ON CONFLICT sees committed
    rows whatever the snapshot, and waits for an uncommitted one, so a concurrent twin is found rather than
    failing the unique key.

    The same statement appends the order's `command` (a submit; its order is the new row) to the book's
    command log and moves the instrument's `book_seq` to it (`_command_log`); a replay writes neither.
    The caller holds the instrument's row lock."""
    order = Order(member=member, instrument=instrument, client_order_id=client_order_id, side=ticket.side,
                  order_type=ticket.order_type, tif=ticket.tif,
                  price=ticket.price if ticket.order_type == OrderType.LIMIT else None,
                  quantity_kg=ticket.quantity_kg, filled_kg=Decimal(0), held_amount=hold, book_seq=seq)
    return order, send_insert_rows([order], unless_exists_on=("member", "client_order_id"),
                                   then=_command_log(instrument, command, None))


def _fold_candles(instrument_ids: list[int]) -> None:
    """Fold the new trades into candles now rather than at the next beat (once per instrument and batch of
    orders). Best effort: the order has committed, and the minutely beat folds whatever a lost message left
    behind."""
    from trading.tasks import candles_fold_instrument  # tasks import services; import late

    (instrument_id,) = instrument_ids
    try:
        candles_fold_instrument.delay(instrument_id)
    except Exception:  # noqa: BLE001 - a broker outage must not turn a committed order into an error
        log.warning("candles fold not enqueued for instrument %s; the beat will catch up", instrument_id,
                    exc_info=True)


def _cash_accounts(read: Callable[[], list[Account]], member_ids: set[int], currency: str, *,
                   fees: bool) -> tuple[dict[int, Account], Account | None]:
    """The members' cash accounts in `currency` and, if `fees`, the platform's fee account, from `read` (their
    locking read, `cash_accounts_locked`), for the order's one `post_many`; an account a member or the platform
    does not have yet is created (a row of this transaction, which no other can see)."""
    found: dict[int, Account] = {}
    fees_account: Account | None = None
    for account in read():
        if account.kind == AccountKind.FEES:
            fees_account = account
        else:
            found[account.member_id] = account  # type: ignore[index]
    for member_id in member_ids - found.keys():
        found[member_id] = member_account(Member.objects.get(pk=member_id), currency)
    if fees and fees_account is None:
        fees_account = system_account(AccountKind.FEES, currency)
    return found, fees_account


def _orders_with_members(pks: set[int]) -> Callable[[], dict[int, Order]]:
    """These orders with their members, by pk, in one plain statement (the makers an order met). Sent now,
    read by the function returned."""
    marks = ", ".join(["%s"] * len(pks))  # placeholders only; the keys go as parameters
    sql = (f"SELECT {columns(Order, 'o')}, {columns(Member, 'm')} FROM trading_order o "  # noqa: S608  # nosec B608 - columns from meta, placeholders
           f"JOIN members_member m ON m.id = o.member_id WHERE o.id IN ({marks})")
    rows = send_select_rows(sql, sorted(pks), Order, Member)

    def read() -> dict[int, Order]:
        found = {}
        for order, member in rows():
            order.member = member
            found[order.pk] = order
        return found

    return read


def _settle(instrument: Instrument, taker: Order, execution: Execution, result: OrderResult) -> None:
    """Settle every fill of `execution` and close what finished, inside the order's transaction: trades in one
    insert, receipts to the buyers (signed events), then every journal entry of the order (a buy's hold, one
    per trade, releases) in one `post_many`, then the orders."""
    # The engine takes any hashable id; this service gives it order primary keys.
    maker_ids = {cast(int, fill.maker_id) for fill in execution.fills} | {cast(int, pk) for pk in execution.cancelled}
    makers = _orders_with_members(maker_ids) if maker_ids else None
    # Every cash account the order touches, in one read sent with the makers' (one round trip): the buyer's for
    # its hold, the makers' members' and the platform's fee account when something filled or was cancelled.
    moved = bool(execution.fills or execution.cancelled)
    accounts_read = None
    if moved or taker.side == Side.BUY:
        accounts_read = cash_accounts_locked([taker.member_id], instrument.currency, fees=moved,
                                             of_orders=sorted(maker_ids))
    orders = makers() if makers else {}
    orders[taker.pk] = taker
    holders = {o.member_id for o in orders.values()} if moved else set()
    if taker.side == Side.BUY:
        holders.add(taker.member_id)
    accounts, fees_account = _cash_accounts(accounts_read, holders, instrument.currency, fees=moved) \
        if accounts_read else ({}, None)
    entries: list[Entry] = []
    if taker.side == Side.BUY:
        account, hold = accounts[taker.member_id], taker.held_amount
        entries.append(Entry("hold", f"O{taker.pk}", [(account, AVAILABLE, -hold), (account, HELD, hold)]))
    now = timezone.now()
    touched: set[int] = set()  # orders to write back (a taker that only rests is already as inserted)

    trades: list[Trade] = []
    for fill in execution.fills:
        maker = orders[cast(int, fill.maker_id)]
        buy, sell = (taker, maker) if taker.side == Side.BUY else (maker, taker)
        quantity = to_kg(fill.quantity)
        price = to_price(fill.price, instrument)
        notional = _floor_cents(quantity * price)
        buyer_bps = instrument.taker_fee_bps if buy is taker else instrument.maker_fee_bps
        seller_bps = instrument.taker_fee_bps if sell is taker else instrument.maker_fee_bps
        trades.append(Trade(
            instrument=instrument, buy_order=buy, sell_order=sell, buyer_id=buy.member_id, seller_id=sell.member_id,
            aggressor=taker.side, price=price, quantity_kg=quantity, notional=notional,
            buyer_fee=_floor_cents(notional * buyer_bps / BPS), seller_fee=_floor_cents(notional * seller_bps / BPS),
            executed_at=now))
    # The trades' insert and the locking reads of the receipts each sell order holds go in one round trip.
    inserted = send_insert_rows(trades) if trades else None
    holding = {sell.pk: order_receipts_locked(holder_id=sell.member_id, order_ref=f"O{sell.pk}")
               for sell in {trade.sell_order.pk: trade.sell_order for trade in trades}.values()}
    if inserted:
        inserted()
    held = {pk: read() for pk, read in holding.items()}
    for trade in trades:
        buy, sell = trade.buy_order, trade.sell_order
        # Delivery and payment in the same transaction: title moves only if cash moves, and back. What the sell
        # order still holds after a delivery is its next delivery's (a sell that met several bids).
        _, held[sell.pk] = receipts_deliver(order_ref=f"O{sell.pk}", seller=sell.member, buyer=buy.member,
                                            quantity_kg=trade.quantity_kg, trade_ref=f"T{trade.pk}",
                                            held=held[sell.pk])
        entries.append(Entry("trade", f"T{trade.pk}", [
            (accounts[buy.member_id], HELD, -(trade.notional + trade.buyer_fee)),
            (accounts[sell.member_id], AVAILABLE, trade.notional - trade.seller_fee),
            (fees_account, AVAILABLE, trade.buyer_fee + trade.seller_fee),  # type: ignore[list-item]
        ]))
        buy.held_amount -= trade.notional + trade.buyer_fee
        for order in (buy, sell):
            order.filled_kg += trade.quantity_kg
            order.status = OrderStatus.FILLED if order.filled_kg == order.quantity_kg else OrderStatus.PARTIALLY_FILLED
            touched.add(order.pk)
        result.trades.append(trade)

    for cancelled in execution.cancelled:  # resting orders of the same owner, removed by self-trade prevention
        cancelled_id = cast(int, cancelled)
        order = orders[cancelled_id]
        order.status = OrderStatus.CANCELLED
        order.cancel_reason = "self-trade prevention"
        touched.add(order.pk)
        result.cancelled_order_ids.append(cancelled_id)

    if execution.resting == 0 and taker.status not in (OrderStatus.FILLED,):
        taker.status = OrderStatus.EXPIRED  # IOC/FOK/market remainder, dropped by the engine
        touched.add(taker.pk)
    finished = [orders[pk] for pk in sorted(touched)
                if orders[pk].status in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED)]
    for order in finished:
        order.closed_at = now
        if order.side == Side.BUY:
            if order.held_amount > 0:  # give back the rest of the cash hold
                account = accounts[order.member_id]
                entries.append(Entry("release", f"O{order.pk}", [(account, HELD, -order.held_amount),
                                                                 (account, AVAILABLE, order.held_amount)]))
                order.held_amount = Decimal(0)
        elif order.status != OrderStatus.FILLED:
            # A filled sell has delivered every receipt it encumbered (they cover exactly what is unfilled).
            receipts_release(order_ref=f"O{order.pk}", holder=order.member)
    # The orders' new states go with the ledger's one statement (the accounts came from _cash_accounts, locked);
    # an order that moved no cash (a sell's unfilled IOC remainder) writes them alone.
    adapt_time = connection.ops.adapt_datetimefield_value
    orders_write = update_rows("trading_order", _ORDER_WRITE_COLUMNS, [
        (o.pk, o.filled_kg, o.status, o.held_amount, adapt_time(o.closed_at), o.cancel_reason)
        for o in (orders[pk] for pk in sorted(touched))])
    if entries:
        post_many(entries, locked=True, along=orders_write)
    elif orders_write:
        write_rows(updates=orders_write)


# What settling changes on an order, with the types of its columns.
_ORDER_WRITE_COLUMNS = [("filled_kg", "numeric"), ("status", "text"), ("held_amount", "numeric"),
                        ("closed_at", "timestamptz"), ("cancel_reason", "text")]


def _release(order: Order, account: Any) -> None:
    """Give back what a finished order still reserves: the rest of a buy's cash hold, a sell's receipts."""
    if order.side == Side.BUY:
        if order.held_amount > 0:
            post(kind="release", reference=f"O{order.pk}",
                 legs=[(account, HELD, -order.held_amount), (account, AVAILABLE, order.held_amount)])
            order.held_amount = Decimal(0)
    else:
        receipts_release(order_ref=f"O{order.pk}", holder=order.member)


def order_cancel(*, member: Member, order_id: int) -> Order:
    """Cancel a live order and release exactly what it still holds. Takes the instrument's row lock."""
    order = Order.objects.filter(pk=order_id, member=member).first()
    if order is None:
        raise NotFound("No such order.")
    cancelled = _cancel(order, reason="")
    if cancelled is None:
        status = Order.objects.filter(pk=order.pk).values_list("status", flat=True).first()
        raise Conflict(f"The order is {status}; there is nothing to cancel.", code="order_not_live")
    return cancelled


def order_cancel_for_hold(*, order_ref: str, reason: str) -> Order | None:
    """The venue pulls a sell order because a receipt behind it is being frozen (receipts' `receipt_freezing`).
    Releases everything the order holds. Nothing to do for an order that is no longer live. Takes the
    instrument's row lock, then the receipts'."""
    if not order_ref.startswith("O") or not order_ref[1:].isdigit():
        return None  # a loan or a withdrawal, not an order
    order = Order.objects.filter(pk=int(order_ref[1:])).first()
    if order is None:
        return None
    return _cancel(order, reason=f"compliance hold on a receipt behind it: {reason}"[:200])


def _cancel(order: Order, *, reason: str) -> Order | None:
    """Take the order off the book and release what it holds; None if it is not live."""
    try:
        with transaction.atomic():
            instrument = instrument_locked(order.instrument_id)
            order = Order.objects.select_related("member").get(pk=order.pk)
            if order.status not in LIVE_ORDER_STATUSES:
                return None
            cached = book_cache.book_for(instrument)
            seq = instrument.book_seq + 1
            book_cache.mark_tentative(instrument.pk, cached)
            cached.book.cancel(order.pk)
            cached.seq = seq
            _log_command(instrument, BookCommand(seq=seq, kind="cancel", order_id=order.pk, owner=order.member_id,
                                                 side=order.side))
            order.status = OrderStatus.CANCELLED
            order.closed_at = timezone.now()
            order.cancel_reason = reason
            _release(order, member_account(order.member, instrument.currency) if order.side == Side.BUY else None)
            order.save(update_fields=["status", "closed_at", "held_amount", "cancel_reason"])
            return order
    except BaseException:
        book_cache.drop(order.instrument_id)
        raise


def withdrawal_request(*, member: Member, receipt: Receipt, destination_country: str) -> tuple[Receipt, str]:
    """The holder asks to take the metal out: export control first (drawing an export licence down when the
    metal leaves a controlled country), then the receipt records the request — one transaction, so a refusal
    draws nothing. Returns the receipt and compliance's reason for allowing it."""
    with transaction.atomic():
        decision = policy.require(policy.withdrawal_check_and_draw(
            member, receipt, destination_country.upper(), receipt.quantity_kg))
        receipt = receipt_withdrawal_request(receipt=receipt, by=member, withdrawal_ref=f"W-{receipt.number}")
    return receipt, decision.reason


def instrument_set_status(*, instrument: Instrument, status: str, reason: str) -> Instrument:
    if status not in InstrumentStatus.values:
        raise ValidationFailed("Unknown instrument status.", code="invalid_status")
    if not reason.strip():
        raise ValidationFailed("Halting or opening needs a reason.", code="reason_required", field="reason")
    with transaction.atomic():
        locked = instrument_locked(instrument.pk)
        locked.status = status
        locked.save(update_fields=["status"])
    return locked

