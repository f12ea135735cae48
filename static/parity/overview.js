/* Overview: polls /api/v1/live/ and redraws the fairness charts. */
"use strict";

(function () {
  const P = window.Parity;

  function drawShare(tenants) {
    P.chart("chart-share", {
      type: "bar",
      data: {
        labels: tenants.map((t) => t.tenant),
        datasets: [
          { label: "Served share", data: tenants.map((t) => 100 * t.served_share), backgroundColor: P.color(0) },
          { label: "Weight share", data: tenants.map((t) => 100 * t.weight_share), backgroundColor: "#9ca3af" },
        ],
      },
      options: {
        scales: { y: { beginAtZero: true, suggestedMax: 100, title: { display: true, text: "% of tokens / of weight" } } },
        plugins: { tooltip: { callbacks: { label: (c) => c.dataset.label + ": " + c.parsed.y.toFixed(1) + " %" } } },
      },
    });
  }

  function drawQueue(tenants) {
    P.chart("chart-queue", {
      type: "bar",
      data: {
        labels: tenants.map((t) => t.tenant),
        datasets: [
          { label: "Running", data: tenants.map((t) => t.num_running), backgroundColor: P.color(2) },
          { label: "Waiting", data: tenants.map((t) => t.num_waiting), backgroundColor: P.color(1) },
        ],
      },
      options: {
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "requests" } } },
      },
    });
  }

  function drawThroughput(points, tenants) {
    const datasets = [
      { label: "Total", data: points.map((p) => p.tokens_per_s), borderColor: "#111827", backgroundColor: "#111827", borderWidth: 2 },
      ...tenants.map((t, i) => ({
        label: t.tenant,
        data: points.map((p) => p.tenants[t.tenant] || 0),
        borderColor: P.color(i),
        backgroundColor: P.color(i),
        borderWidth: 1.5,
      })),
    ];
    P.chart("chart-throughput", {
      type: "line",
      data: { labels: points.map((p) => P.timeLabel(p.time)), datasets },
      options: {
        elements: { point: { radius: 0 } },
        interaction: { mode: "index", intersect: false },
        scales: { y: { beginAtZero: true, title: { display: true, text: "tokens / s" } }, x: { ticks: { maxTicksLimit: 8 } } },
      },
    });
  }

  function drawKv(workers) {
    P.chart("chart-kv", {
      type: "bar",
      data: {
        labels: workers.map((w) => w.worker),
        datasets: [
          { label: "Used blocks", data: workers.map((w) => w.kv_blocks_used), backgroundColor: P.color(4) },
          { label: "Free blocks", data: workers.map((w) => Math.max(0, w.kv_blocks_total - w.kv_blocks_used)), backgroundColor: "#e5e7eb" },
        ],
      },
      options: {
        indexAxis: "y",
        scales: { x: { stacked: true, beginAtZero: true, title: { display: true, text: "KV blocks" } }, y: { stacked: true } },
      },
    });
  }

  function fillTables(live) {
    P.fillTable(document.querySelector("#live-tenants tbody"), live.tenants.map((t) => [
      t.tenant,
      { text: P.fmt(t.weight), num: true },
      { text: P.pct(t.weight_share), num: true },
      { text: P.fmt(t.served_tokens, 0), num: true },
      { text: P.pct(t.served_share), num: true },
      { text: P.fmt(t.num_waiting, 0), num: true },
      { text: P.fmt(t.num_running, 0), num: true },
    ]));
    P.fillTable(document.querySelector("#live-workers tbody"), live.workers.map((w) => [
      w.worker, w.model, w.policy,
      { text: P.fmt(w.num_in_flight, 0), num: true },
      { text: P.fmt(w.num_waiting, 0), num: true },
      { text: P.fmt(w.num_running, 0), num: true },
      { text: P.fmt(w.kv_blocks_used, 0) + " / " + P.fmt(w.kv_blocks_total, 0), num: true },
      P.timeLabel(w.published_at),
    ]));
  }

  function render(live) {
    const hasWorkers = live.workers.length > 0;
    P.show(document.getElementById("live-empty"), !hasWorkers);
    P.show(document.getElementById("live-content"), hasWorkers);
    if (!hasWorkers) return;
    drawShare(live.tenants);
    drawQueue(live.tenants);
    drawThroughput(live.throughput, live.tenants);
    drawKv(live.workers);
    fillTables(live);
  }

  function statusLine(live) {
    if (!live.workers.length) return "Updated " + new Date().toISOString().slice(11, 19) + " UTC";
    const n = live.workers.length;
    return n + " worker" + (n === 1 ? "" : "s") + " · " + P.fmt(live.served_tokens, 0) +
      " tokens in the window · state of " + P.timeLabel(live.now) + " UTC";
  }

  async function refresh(root) {
    const windowS = document.getElementById("live-window").value;
    const error = document.getElementById("live-error");
    try {
      const live = await P.fetchJSON(root.dataset.url + "?window_s=" + encodeURIComponent(windowS));
      render(live);
      P.show(error, false);
      document.getElementById("live-status").textContent = statusLine(live);
      root.dataset.loaded = "true";
    } catch (err) {
      error.textContent = "Could not load the live state: " + err.message;
      P.show(error, true);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("live");
    const interval = Number(root.dataset.intervalMs) || 2000;
    let timer = null;
    let generation = 0;  // a window change starts a new polling chain; the old one stops
    const tick = async (mine) => {
      await refresh(root);
      if (mine === generation) timer = window.setTimeout(() => tick(mine), interval);
    };
    document.getElementById("live-window").addEventListener("change", () => {
      window.clearTimeout(timer);
      generation += 1;
      tick(generation);
    });
    document.getElementById("live-controls").addEventListener("submit", (e) => e.preventDefault());
    tick(generation);
  });
})();
