/* Candlestick + volume charts for the portal, drawn with the vendored TradingView Lightweight Charts.
 *
 * Usage in a template (load this file and the library only on pages with a chart):
 *   {{ candles|json_script:"candles-GA-6N-CN" }}
 *   <div class="chart" data-candles="candles-GA-6N-CN" data-currency="USD" role="img"
 *        aria-label="Daily candles for GA-6N-CN, USD per kg (the table below has the same figures)"></div>
 * where `candles` is a list of {time, open, high, low, close, volume}: time as a UTC day "YYYY-MM-DD"
 * or Unix seconds, prices and volumes as decimal strings (parsed to floats here for drawing only).
 * Charts are mounted on load and again after every htmx swap, so a swapped-in chart draws itself.
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
    var candles = chart.addSeries(LC.CandlestickSeries, {
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
    candles.setData(rows.map(function (r) {
      return { time: r.time, open: Number(r.open), high: Number(r.high), low: Number(r.low), close: Number(r.close) };
    }));
    volume.setData(rows.map(function (r) {
      var up = Number(r.close) >= Number(r.open);
      return { time: r.time, value: Number(r.volume || 0), color: up ? "rgba(20,108,46,.45)" : "rgba(161,29,33,.45)" };
    }));
    chart.timeScale().fitContent();
    element.ingotChart = chart;
  }

  function mountAll(root) {
    (root || document).querySelectorAll("[data-candles]").forEach(mount);
  }

  window.IngotCharts = { mount: mount, mountAll: mountAll };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { mountAll(document); });
  } else {
    mountAll(document);
  }
  document.addEventListener("htmx:afterSwap", function (event) { mountAll(event.target); });
})();
