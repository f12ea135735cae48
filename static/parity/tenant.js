/* Tenant page: the tenant's usage over a chosen range, from /api/v1/usage/. */
"use strict";

(function () {
  const P = window.Parity;
  // range -> [seconds back, bucket width]; bucket counts stay within one API page.
  const RANGES = {
    "1h": [3600, "1m"],
    "6h": [6 * 3600, "1m"],
    "24h": [24 * 3600, "1h"],
    "7d": [7 * 86400, "1h"],
    "30d": [30 * 86400, "1d"],
  };
  const WIDTH_S = { "1m": 60, "1h": 3600, "1d": 86400 };
  const MAX_LIMIT = { "1m": 1440, "1h": 168, "1d": 31 };  // the API's largest page

  function query(slug, range) {
    const [back, width] = RANGES[range];
    const step = WIDTH_S[width];
    // Align to bucket edges, so the last bucket is the current, partly filled one.
    const end = Math.ceil(Date.now() / 1000 / step) * step;
    const params = new URLSearchParams({
      start_time: String(end - back),
      end_time: String(end),
      bucket_width: width,
      group_by: "tenant",
      tenants: slug,
      limit: String(MAX_LIMIT[width]),
    });
    return { params, withDate: width !== "1m" || back > 86400 };
  }

  function sum(results, field) {
    return results.reduce((total, r) => total + (Number(r[field]) || 0), 0);
  }

  function first(results, field) {
    const found = results.find((r) => r[field] !== null && r[field] !== undefined);
    return found ? Number(found[field]) : null;
  }

  function draw(buckets, withDate) {
    const labels = buckets.map((b) => P.timeLabel(b.start_time, withDate));
    const results = buckets.map((b) => b.results || []);
    P.chart("chart-tokens", {
      type: "bar",
      data: {
        labels,
        datasets: [
          { label: "Input", data: results.map((r) => sum(r, "input_tokens")), backgroundColor: P.color(0) },
          { label: "Output", data: results.map((r) => sum(r, "output_tokens")), backgroundColor: P.color(1) },
        ],
      },
      options: { scales: { x: { stacked: true, ticks: { maxTicksLimit: 8 } }, y: { stacked: true, beginAtZero: true } } },
    });
    P.chart("chart-kv-gib", {
      type: "bar",
      data: { labels, datasets: [{ label: "GiB-seconds", data: results.map((r) => sum(r, "kv_gib_seconds")), backgroundColor: P.color(4) }] },
      options: { scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true } } },
    });
    P.chart("chart-ttft", {
      type: "line",
      data: {
        labels,
        datasets: [
          { label: "p50", data: results.map((r) => first(r, "ttft_p50_ms")), borderColor: P.color(2), backgroundColor: P.color(2), spanGaps: true },
          { label: "p95", data: results.map((r) => first(r, "ttft_p95_ms")), borderColor: P.color(3), backgroundColor: P.color(3), spanGaps: true },
        ],
      },
      options: { scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true, title: { display: true, text: "ms" } } } },
    });
    return results.reduce((total, r) => total + sum(r, "num_requests"), 0);
  }

  async function load(section) {
    const status = document.getElementById("usage-status");
    const error = document.getElementById("usage-error");
    const { params, withDate } = query(section.dataset.tenant, document.getElementById("usage-range").value);
    status.textContent = "Loading…";
    try {
      const buckets = await P.fetchAllPages(section.dataset.usageUrl + "?" + params.toString());
      const numRequests = draw(buckets, withDate);
      status.textContent = P.fmt(numRequests, 0) + " requests in range";
      P.show(error, false);
    } catch (err) {
      status.textContent = "";
      error.textContent = "Could not load usage: " + err.message;
      P.show(error, true);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const section = document.getElementById("tenant-usage");
    document.getElementById("usage-range").addEventListener("change", () => load(section));
    document.getElementById("usage-range-form").addEventListener("submit", (e) => e.preventDefault());
    load(section);
  });
})();
