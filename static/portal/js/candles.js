/* Candlestick + volume charts for the portal, drawn with the vendored TradingView Lightweight Charts.
 *
 * Usage in a template (load this file and the library only on pages with a chart):
 *   {{ candles|json_script:"candles-GA-6N-CN" }}
 *   <div class="chart" data-candles="candles-GA-6N-CN" data-currency="USD" role="img"
 *        aria-label="Daily candles for GA-6N-CN, USD per kg (the table below has the same figures)"></div>
 * where `candles` is a list of {time, open, high, low, close, volume}: time as a UTC day "YYYY-MM-DD"
 * or Unix seconds, prices and volumes as decimal strings (parsed to floats here for drawing only).
 * With data-line on the element, the rows are {time, value, volume} and draw as a line (the index).
 * Charts are mounted on load and again after every htmx swap, so a swapped-in chart draws itself; a
 * swapped-in <div data-candle-update="<chart id>"> with the newest bars updates a chart in place.
 */
(function () {
  "use strict";

  function readCandles(id) {
    var node = document.getElementById(id);
    if (!node) { return []; }
    try { return JSON.parse(node.textContent) || []; } catch (e) { return []; }
  }

  function mount(element) {
    if (element.dataset.chartMounted || !window.LightweightCharts) { return; }
    element.dataset.chartMounted = "1";
    var LC = window.LightweightCharts;
    var rows = readCandles(element.dataset.candles);
    var chart = LC.createChart(element, {
      autoSize: true,
      layout: { background: { color: "#ffffff" }, textColor: "#17202a", attributionLogo: true },
      grid: { vertLines: { color: "#eef1f5" }, horzLines: { color: "#eef1f5" } },
      rightPriceScale: { borderColor: "#d5dae1" },
      timeScale: { borderColor: "#d5dae1" },
      localization: { locale: "en-GB" },
    });
    var line = Boolean(element.dataset.line);
    var candles = line
      ? chart.addSeries(LC.LineSeries, { color: "#12324f", lineWidth: 2, priceFormat: { type: "price", precision: 2, minMove: 0.01 } })
      : chart.addSeries(LC.CandlestickSeries, {
        upColor: "#146c2e", downColor: "#a11d21", borderVisible: false,
        wickUpColor: "#146c2e", wickDownColor: "#a11d21",
        priceFormat: { type: "price", precision: 2, minMove: 0.01 },
      });
    var volume = chart.addSeries(LC.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "volume", lastValueVisible: false, priceLineVisible: false,
    });
    // Volume in the bottom fifth of the pane, under the candles.
    volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
    candles.setData(rows.map(line ? toPoint : toCandle));
    volume.setData(rows.map(line ? toPlainVolume : toVolume));
    if (rows.length >= FEW_BARS) {
      chart.timeScale().fitContent();
    } else {
      // A young market: a handful of bars at a readable width on the right, not stretched across the pane.
      var spacing = Math.max(6, Math.min(40, (element.clientWidth - 80) / (rows.length + 4)));
      chart.timeScale().applyOptions({ barSpacing: spacing, rightOffset: 2 });
      chart.timeScale().scrollToRealTime();
    }
    element.ingotChart = chart;
    element.ingotSeries = { candles: candles, volume: volume };
    element.ingotLastTime = rows.length ? rows[rows.length - 1].time : null;
  }

  var FEW_BARS = 30;

  function toCandle(r) {
    return { time: r.time, open: Number(r.open), high: Number(r.high), low: Number(r.low), close: Number(r.close) };
  }

  function toPoint(r) { return { time: r.time, value: Number(r.value) }; }

  function toPlainVolume(r) { return { time: r.time, value: Number(r.volume || 0), color: "rgba(18,50,79,.35)" }; }

  function toVolume(r) {
    var up = Number(r.close) >= Number(r.open);
    return { time: r.time, value: Number(r.volume || 0), color: up ? "rgba(20,108,46,.45)" : "rgba(161,29,33,.45)" };
  }

  // Live updates: a hidden <div data-candle-update="chart-id"> holding a json_script of the newest bars
  // (same shape) updates that chart in place. Bars older than the chart's last are skipped: the library
  // only updates the last bar or appends newer ones.
  function applyUpdates(root) {
    var holders = Array.prototype.slice.call(root.querySelectorAll("[data-candle-update]"));
    if (root.matches && root.matches("[data-candle-update]")) { holders.push(root); }
    holders.forEach(function (holder) {
      var element = document.getElementById(holder.dataset.candleUpdate);
      var script = holder.querySelector("script[type='application/json']");
      if (!element || !element.ingotSeries || !script) { return; }
      var rows;
      try { rows = JSON.parse(script.textContent) || []; } catch (e) { return; }
      rows.forEach(function (r) {
        if (element.ingotLastTime !== null && r.time < element.ingotLastTime) { return; }
        element.ingotSeries.candles.update(toCandle(r));
        element.ingotSeries.volume.update(toVolume(r));
        element.ingotLastTime = r.time;
      });
      if (rows.length) {
        var empty = element.parentNode.querySelector("[data-chart-empty]");
        if (empty) { empty.remove(); }
      }
    });
  }

  function mountAll(root) {
    (root || document).querySelectorAll("[data-candles]").forEach(mount);
  }

  window.IngotCharts = { mount: mount, mountAll: mountAll, applyUpdates: applyUpdates };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { mountAll(document); });
  } else {
    mountAll(document);
  }
  // htmx:load fires on the root of each piece of swapped-in content.
  document.addEventListener("htmx:load", function (event) {
    mountAll(event.target);
    applyUpdates(event.target);
  });
})();
