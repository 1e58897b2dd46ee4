/* Ingot portal behaviour on top of htmx. Every page works without it (forms post and pages reload);
 * with it, forms answer in place and the live panels refresh.
 *
 * - Responses the portal rendered as a form or panel (header X-Ingot-Form) are swapped whatever their
 *   status: a 403 compliance refusal is shown next to the form like a 400. Any other error page is not.
 * - After a swap (and on a page rendered with errors), focus goes to the element marked data-autofocus
 *   (a refusal or a confirmation) or else to the first invalid field, so keyboard and screen-reader
 *   users land on what happened; polled panels never carry either.
 * - The order ticket's price field is disabled for market orders (they take no price).
 * - A live panel that cannot reach the server says so instead of silently freezing; a form whose request
 *   fails outright says so next to it.
 */
(function () {
  "use strict";

  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.getResponseHeader("X-Ingot-Form") && xhr.status >= 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  function syncTicket(form) {
    var type = form.querySelector("[name=order_type]");
    var price = form.querySelector("[name=price]");
    if (!type || !price) { return; }
    var market = type.value === "market";
    price.disabled = market;
    price.closest(".field").classList.toggle("field-disabled", market);
  }

  function enhance(root) {
    var forms = Array.prototype.slice.call(root.querySelectorAll("form[data-order-ticket]"));
    if (root.matches && root.matches("form[data-order-ticket]")) { forms.push(root); }
    forms.forEach(function (form) {
      syncTicket(form);
      if (!form.dataset.enhanced) {
        form.dataset.enhanced = "1";
        form.addEventListener("change", function (e) {
          if (e.target.name === "order_type") { syncTicket(form); }
        });
      }
    });
  }

  // htmx:load fires on the root of every piece of new content (and on <body> at page load).
  document.addEventListener("htmx:load", function (event) {
    var root = event.target;
    enhance(root);
    // A refusal or confirmation first; otherwise the first field the server marked invalid.
    var focus = root.matches("[data-autofocus]") ? root : root.querySelector("[data-autofocus]");
    if (!focus) { focus = root.querySelector("[aria-invalid=true]"); }
    if (focus) { focus.focus(); }
  });

  // A form whose request failed outright (server error, network down) says so in place. The order ticket
  // can say more: its client_order_id makes a resubmit of the same ticket safe.
  function formFailed(event, what) {
    var form = event.detail.elt && event.detail.elt.closest && event.detail.elt.closest("form");
    if (!form) { return; }
    var box = form.querySelector(".form-error[data-transport]");
    if (!box) {
      box = document.createElement("div");
      box.className = "form-error";
      box.setAttribute("role", "alert");
      box.setAttribute("tabindex", "-1");
      box.dataset.transport = "1";
      form.insertBefore(box, form.firstElementChild);
    }
    var text = document.createElement("p");
    text.textContent = what + (form.hasAttribute("data-order-ticket")
      ? " Check your open orders; submitting this same ticket again is safe, it cannot place a second order."
      : " Please try again.");
    box.replaceChildren(text);
    box.focus();
  }

  document.addEventListener("htmx:responseError", function (event) {
    var panel = event.detail.elt && event.detail.elt.closest("[data-live]");
    if (panel) { panel.classList.add("is-stale"); return; }
    formFailed(event, "Ingot could not complete this (error " + event.detail.xhr.status + ").");
  });

  document.addEventListener("htmx:sendError", function (event) {
    var panel = event.detail.elt && event.detail.elt.closest("[data-live]");
    if (panel) { panel.classList.add("is-stale"); return; }
    formFailed(event, "Ingot cannot be reached.");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var panel = event.detail.elt && event.detail.elt.closest("[data-live]");
    if (panel && event.detail.successful) { panel.classList.remove("is-stale"); }
  });

})();
