"""Portal forms: they carry input to the services and show the services' refusals next to the field they
concern. They hold no trading or compliance rule: quantities, prices and destinations are judged by
trading.services.order_place and compliance.policy, with the same codes the API returns."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django_countries import countries

from config.errors import ApplicationError
from trading.models import Instrument, OrderType, Side, TimeInForce

# Where an order refusal is shown: the field it is about (the API's codes, trading.services.check_order
# and order entry), or above the form for everything else (cash, KYC, halts, export control...).
ORDER_ERROR_FIELDS: dict[str, str] = {
    "off_tick": "price",
    "out_of_band": "price",
    "price_required": "price",
    "invalid_price": "price",
    "off_lot": "quantity_kg",
    "invalid_quantity": "quantity_kg",
    "insufficient_receipts": "quantity_kg",
}


def new_client_order_id() -> str:
    """One per rendered ticket: submitting the same ticket twice places one order (order_place replays)."""
    return f"web-{uuid.uuid4().hex}"


class OrderTicketForm(forms.Form):
    # Nothing is required here: order_place judges every input (a missing side, quantity or price is its
    # refusal, with its code), so the portal and the API refuse the same order in the same words.
    side = forms.ChoiceField(label="Side", choices=Side.choices, initial=Side.BUY, widget=forms.RadioSelect,
                             required=False)
    order_type = forms.ChoiceField(label="Order type", choices=OrderType.choices, initial=OrderType.LIMIT,
                                   required=False)
    tif = forms.ChoiceField(label="Time in force", choices=[(v, f"{label} ({v})") for v, label in TimeInForce.choices],
                            initial=TimeInForce.GTC, required=False)
    # Text, not number inputs: the service judges the figures (lot, tick, band) and says which rule failed;
    # a browser's own number validation would answer first, in other words.
    quantity_kg = forms.CharField(label="Quantity", required=False, max_length=32, widget=forms.TextInput(
        attrs={"inputmode": "decimal", "autocomplete": "off", "spellcheck": "false", "class": "num-input"}))
    price = forms.CharField(label="Limit price", required=False, max_length=32, widget=forms.TextInput(
        attrs={"inputmode": "decimal", "autocomplete": "off", "spellcheck": "false", "class": "num-input"}))
    client_order_id = forms.CharField(widget=forms.HiddenInput, max_length=64, required=False)

    def __init__(self, *args: Any, instrument: Instrument, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instrument = instrument
        self.fields["quantity_kg"].help_text = f"kg, in steps of {instrument.lot_size_kg.normalize():f} kg"
        band = ""
        if instrument.band_low is not None and instrument.band_high is not None:
            places = max(2, -int(instrument.tick_size.normalize().as_tuple().exponent))
            band = f"; today's band {instrument.band_low:,.{places}f}–{instrument.band_high:,.{places}f}"
        self.fields["price"].help_text = (f"{instrument.currency}/kg, in ticks of "
                                          f"{instrument.tick_size.normalize():f}{band}. Not used by market orders.")
        if not self.is_bound:
            self.initial.setdefault("client_order_id", new_client_order_id())

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # A market order has no price field on screen (the script disables it); without the script a
        # leftover figure must not turn the order into a refusal.
        if cleaned.get("order_type") == OrderType.MARKET:
            cleaned["price"] = None
        return cleaned

    def order_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {"side": data["side"], "order_type": data["order_type"], "tif": data["tif"],
                "quantity_kg": (data.get("quantity_kg") or "").strip(), "price": (data.get("price") or "").strip()
                or None, "client_order_id": data["client_order_id"]}

    def add_refusal(self, error: ApplicationError) -> None:
        field = ORDER_ERROR_FIELDS.get(error.code)
        if field is None and error.field in ("quantity_kg", "price"):
            field = error.field
        self.add_error(field, forms.ValidationError(error.message, code=error.code))

    def next_ticket(self) -> OrderTicketForm:
        """The ticket after an accepted order: same side, type, time in force and price, a fresh id."""
        data = self.cleaned_data
        return OrderTicketForm(instrument=self.instrument, initial={
            "side": data["side"], "order_type": data["order_type"], "tif": data["tif"],
            "price": data.get("price") or "", "client_order_id": new_client_order_id()})


class WithdrawalRequestForm(forms.Form):
    destination_country = forms.ChoiceField(
        label="Destination country",
        help_text="Where the metal goes after it leaves the warehouse. Export control decides whether it may.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["destination_country"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "Choose a country…"), *countries]
