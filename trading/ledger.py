"""The double-entry cash ledger: every movement is one journal entry whose postings sum to zero per currency.

Balances live on Account rows (available, held) and change only here, inside the caller's transaction,
after the accounts are locked in pk order. The database refuses a negative member balance (CHECK).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction

from config.db import new_keys, update_rows, write_rows
from config.errors import Conflict, ValidationFailed
from members.models import Member, User
from trading.lock_objects import accounts_locked
from trading.models import Account, AccountKind, JournalEntry, Posting
from trading.money import quantize_money

AVAILABLE = "available"
HELD = "held"
Leg = tuple[Account, str, Decimal]  # account, bucket, signed amount


class InsufficientFunds(Conflict):
    default_code = "insufficient_cash"


def member_account(member: Member, currency: str) -> Account:
    return _account(member=member, currency=currency, kind=AccountKind.MEMBER)


def system_account(kind: str, currency: str) -> Account:
    return _account(member=None, currency=currency, kind=kind)


def _account(**key: Any) -> Account:
    """The account with these fields, created if there is none. A concurrent creator's row is waited for and
    then found (`ON CONFLICT DO NOTHING`, no savepoint to roll back to): safe in order entry's pipelined block
    (config.db.pipelined)."""
    account = Account.objects.filter(**key).first()
    if account is None:
        Account.objects.bulk_create([Account(**key)], ignore_conflicts=True)
        account = Account.objects.get(**key)
    return account


@dataclass(frozen=True)
class Entry:
    """One journal entry to write: its postings must sum to zero per currency."""

    kind: str
    reference: str
    legs: list[Leg]
    memo: str = ""
    by: User | None = None


def post(*, kind: str, reference: str, legs: Iterable[Leg], memo: str = "", by: User | None = None) -> JournalEntry:
    """Write one balanced journal entry and apply it to the balances. Takes the accounts' row locks (pk order)
    and reads their balances fresh under the lock."""
    return post_many([Entry(kind, reference, list(legs), memo, by)])[0]


def post_many(entries: Sequence[Entry], *, locked: bool = False,
              along: Sequence[tuple[str, Sequence[Any]]] = ()) -> list[JournalEntry]:
    """Write these balanced journal entries, in order, and apply them to the balances: every account of every
    entry is locked once (pk order) and read fresh under the lock, each entry is checked against the balances
    the entries before it left (so a batch refuses exactly what posting one by one would), then the entries
    and their postings are inserted in bulk and each touched account is written once.

    Every check runs before the first write, so a refusal writes nothing: no savepoint is needed inside the
    caller's transaction.

    `locked`: the caller read every account of the entries with its row lock in this transaction, balances
    included (order settlement reads them all in one statement): they are not read and locked again.
    `along`: the caller's own writes, (sql, params) each, sent with the ledger's (config.db.write_rows: they
    must not read what it writes); run only if there is something to post."""
    if not entries:
        return []
    batch = []
    for entry in entries:
        legs = [(acc, bucket, quantize_money(amount)) for acc, bucket, amount in entry.legs if amount]
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for account, _, amount in legs:
            totals[account.currency] += amount
        if any(total != 0 for total in totals.values()):
            raise ValueError(f"unbalanced journal entry {entry.kind}: {dict(totals)}")
        batch.append((entry, legs))
    with transaction.atomic(savepoint=False):
        if locked:
            current = {acc.pk: acc for _, legs in batch for acc, _, _ in legs}
        else:
            current = {a.pk: a for a in accounts_locked([acc.pk for _, legs in batch for acc, _, _ in legs])}
        touched: set[int] = set()
        for _, legs in batch:
            delta: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
            for account, bucket, amount in legs:
                delta[(account.pk, bucket)] += amount
            for (pk, bucket), amount in delta.items():
                account = current[pk]
                if account.kind != AccountKind.EXTERNAL and getattr(account, bucket) + amount < 0:
                    raise InsufficientFunds(
                        f"Not enough {bucket} cash: {getattr(account, bucket)} {account.currency}, needs {-amount}.",
                        details={"currency": account.currency, bucket: str(getattr(account, bucket)),
                                 "required": str(-amount)})
            for (pk, bucket), amount in delta.items():
                setattr(current[pk], bucket, getattr(current[pk], bucket) + amount)
                touched.add(pk)
        # The entries, their postings (keys taken ahead: config.db.new_keys) and every touched account go to the
        # database in one statement (config.db.write_rows), with the caller's `along` writes.
        rows = [JournalEntry(pk=key, kind=entry.kind, reference=entry.reference[:64], memo=entry.memo,
                             created_by=entry.by)
                for key, (entry, _) in zip(new_keys(JournalEntry, len(batch)), batch, strict=True)]
        postings = [Posting(entry=row, account=acc, bucket=bucket, amount=amount, currency=acc.currency)
                    for row, (_, legs) in zip(rows, batch, strict=True) for acc, bucket, amount in legs]
        for posting, key in zip(postings, new_keys(Posting, len(postings)), strict=True):
            posting.pk = key
        # The rows are locked, so the new balances are computed here in Decimal and written as values:
        # an `F() + x` increment would be float arithmetic on SQLite (the embedded mode) and drift.
        balances = update_rows("trading_account", [("available", "numeric"), ("held", "numeric")],
                               [(pk, current[pk].available, current[pk].held) for pk in sorted(touched)])
        write_rows(rows, postings, updates=[*balances, *along])
    return rows


def _positive(amount: Decimal) -> Decimal:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise ValidationFailed("Amount must be a positive number.", code="invalid_amount", field="amount")
    if quantize_money(amount) != amount:
        raise ValidationFailed("Amount has more than two decimals.", code="invalid_amount", field="amount")
    return amount


def cash_deposit(*, member: Member, currency: str, amount: Decimal, by: User | None, reason: str) -> JournalEntry:
    """Staff record money received from a member's bank: the outside world pays the member."""
    amount = _positive(amount)
    if not reason.strip():
        raise ValidationFailed("A deposit needs a reason.", code="reason_required", field="reason")
    with transaction.atomic():
        account = member_account(member, currency)
        external = system_account(AccountKind.EXTERNAL, currency)
        return post(kind="deposit", reference=f"M{member.pk}", memo=reason, by=by,
                    legs=[(external, AVAILABLE, -amount), (account, AVAILABLE, amount)])


def cash_withdraw(*, member: Member, currency: str, amount: Decimal, by: User | None, reason: str) -> JournalEntry:
    amount = _positive(amount)
    if not reason.strip():
        raise ValidationFailed("A withdrawal needs a reason.", code="reason_required", field="reason")
    with transaction.atomic():
        account = member_account(member, currency)
        external = system_account(AccountKind.EXTERNAL, currency)
        return post(kind="withdrawal", reference=f"M{member.pk}", memo=reason, by=by,
                    legs=[(account, AVAILABLE, -amount), (external, AVAILABLE, amount)])
