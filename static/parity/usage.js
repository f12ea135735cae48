/* Usage explorer: draws the usage API's buckets for the filters the server validated. */
"use strict";

(function () {
  const P = window.Parity;
  const MAX_TABLE_ROWS = 500;
  const MAX_SERIES = 12;
  const GROUP_FIELDS = { tenant: "tenant", api_key: "api_key_id", model: "model", app: "app" };
  const SUMMED = new Set(["input_tokens", "output_tokens", "input_cached_tokens", "num_requests", "kv_gib_seconds", "preemptions"]);

  function seriesKey(result, groupBy) {
    if (!groupBy.length) return "All usage";
    return groupBy.map((g) => {
      const value = result[GROUP_FIELDS[g]];
      return value === null || value === undefined || value === "" ? "(none)" : String(value);
    }).join(" · ");
  }

  function series(buckets, groupBy, metric) {
    const byKey = new Map();
    buckets.forEach((bucket, index) => {
      for (const result of bucket.results || []) {
        const key = seriesKey(result, groupBy);
        if (!byKey.has(key)) byKey.set(key, new Array(buckets.length).fill(SUMMED.has(metric) ? 0 : null));
        const values = byKey.get(key);
        const value = result[metric] === null || result[metric] === undefined ? null : Number(result[metric]);
        values[index] = SUMMED.has(metric) ? values[index] + (value || 0) : value;
      }
    });
    return [...byKey.entries()].sort((a, b) => a[0].localeCompare(b[0])).slice(0, MAX_SERIES);
  }

  function draw(buckets, groupBy, metric, withDate) {
    const summed = SUMMED.has(metric);
    const datasets = series(buckets, groupBy, metric).map(([key, data], i) => ({
      label: key, data, backgroundColor: P.color(i), borderColor: P.color(i), spanGaps: true,
    }));
    P.chart("chart-usage", {
      type: summed ? "bar" : "line",
      data: { labels: buckets.map((b) => P.timeLabel(b.start_time, withDate)), datasets },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { x: { stacked: summed, ticks: { maxTicksLimit: 12 } }, y: { stacked: summed, beginAtZero: true } },
      },
    });
  }

  function fillTable(buckets, withDate) {
    const rows = [];
    for (const bucket of buckets) {
      for (const r of bucket.results || []) {
        rows.push([
          P.timeLabel(bucket.start_time, withDate), r.tenant ?? "", r.api_key_id ?? "", r.model ?? "", r.app ?? "",
          { text: P.fmt(r.num_requests, 0), num: true },
          { text: P.fmt(r.input_tokens, 0), num: true },
          { text: P.fmt(r.input_cached_tokens, 0), num: true },
          { text: P.fmt(r.output_tokens, 0), num: true },
          { text: P.fmt(Number(r.kv_gib_seconds)), num: true },
          { text: P.fmt(r.ttft_p50_ms, 0), num: true },
          { text: P.fmt(r.ttft_p95_ms, 0), num: true },
          { text: P.fmt(r.latency_p95_ms, 0), num: true },
          { text: P.fmt(r.preemptions, 0), num: true },
        ]);
      }
    }
    P.fillTable(document.querySelector("#usage-table tbody"), rows.slice(0, MAX_TABLE_ROWS));
    const note = document.getElementById("usage-table-note");
    note.textContent = "Showing the first " + MAX_TABLE_ROWS + " of " + rows.length + " rows; the CSV has them all.";
    P.show(note, rows.length > MAX_TABLE_ROWS);
    return rows.length;
  }

  async function load(section) {
    const status = document.getElementById("usage-status");
    const error = document.getElementById("usage-error");
    const groupBy = section.dataset.groupBy ? section.dataset.groupBy.split(",") : [];
    const metricSelect = document.getElementById("usage-metric");
    try {
      const buckets = await P.fetchAllPages(section.dataset.url, 12);
      const span = buckets.length ? buckets[buckets.length - 1].end_time - buckets[0].start_time : 0;
      const withDate = span > 86400 || (buckets.length > 1 && buckets[1].start_time - buckets[0].start_time >= 3600);
      const numRows = fillTable(buckets, withDate);
      P.show(document.getElementById("usage-empty"), numRows === 0);
      draw(buckets, groupBy, metricSelect.value, withDate);
      metricSelect.addEventListener("change", () => draw(buckets, groupBy, metricSelect.value, withDate));
      status.textContent = buckets.length + " buckets, " + numRows + " rows";
      section.dataset.loaded = "true";
    } catch (err) {
      status.textContent = "";
      error.textContent = "Could not load usage: " + err.message;
      P.show(error, true);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const section = document.getElementById("usage-results");
    if (section) load(section);
  });
})();
