/* Parity dashboard: helpers shared by the pages' scripts (plain script, no build step). */
"use strict";

window.Parity = (function () {
  const PALETTE = [
    "#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea",
    "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d",
  ];

  function color(index) {
    return PALETTE[index % PALETTE.length];
  }

  function setupCharts() {
    if (!window.Chart) return;
    // Charts are redrawn every few seconds and read by tests: draw each frame at once.
    Chart.defaults.animation = false;
    Chart.defaults.responsive = true;
    Chart.defaults.maintainAspectRatio = false;
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = "#374151";
    Chart.defaults.plugins.legend.labels.boxWidth = 12;
  }

  /* Create the chart on first use, then replace its data in place (no flicker). */
  function chart(canvasId, config) {
    const canvas = document.getElementById(canvasId);
    const existing = Chart.getChart(canvas);
    if (existing && existing.config.type === config.type) {
      existing.data.labels = config.data.labels;
      existing.data.datasets = config.data.datasets;
      existing.options = config.options || existing.options;
      existing.update("none");
      return existing;
    }
    if (existing) existing.destroy();
    return new Chart(canvas, config);
  }

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  /* JSON from our API with the session cookie; throws an Error whose message a person can read. */
  async function fetchJSON(url, options) {
    const response = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const error = new Error(describeError(response, body));
      error.status = response.status;
      error.body = body;
      throw error;
    }
    return body;
  }

  function describeError(response, body) {
    if (response.status === 401 || response.status === 403) {
      return "Your session has ended or is not staff: sign in again.";
    }
    if (response.status === 404) return "This API is not available on the server (404).";
    if (body && body.detail) return body.detail;
    if (body && typeof body === "object") return flattenErrors(body).join(" ");
    return "The server answered " + response.status + ".";
  }

  function flattenErrors(body, prefix) {
    const messages = [];
    for (const [field, value] of Object.entries(body)) {
      const name = prefix ? prefix + "." + field : field;
      if (Array.isArray(value)) messages.push(name + ": " + value.join(" "));
      else if (value && typeof value === "object") messages.push(...flattenErrors(value, name));
      else messages.push(name + ": " + value);
    }
    return messages;
  }

  /* Every page of a cursor-paginated list (the usage API): follows next_page. */
  async function fetchAllPages(url, maxPages) {
    const data = [];
    let next = url;
    for (let page = 0; next && page < (maxPages || 50); page++) {
      const body = await fetchJSON(next);
      data.push(...body.data);
      next = body.has_more && body.next_page ? withParam(url, "page", body.next_page) : null;
    }
    return data;
  }

  function withParam(url, name, value) {
    const parsed = new URL(url, window.location.origin);
    parsed.searchParams.set(name, value);
    return parsed.pathname + parsed.search;
  }

  const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  function fmt(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "—";
    return (digits === 0 ? integer : decimal).format(value);
  }

  function pct(share) {
    return share === null || share === undefined ? "—" : (100 * share).toFixed(1) + " %";
  }

  function timeLabel(unixSeconds, withDate) {
    const iso = new Date(unixSeconds * 1000).toISOString();
    // UTC, like every time on these pages: "11-21 06:00" for buckets, "06:00:05" for live.
    return withDate ? iso.slice(5, 16).replace("T", " ") : iso.slice(11, 19);
  }

  function show(element, visible) {
    if (element) element.hidden = !visible;
  }

  function fillTable(tbody, rows) {
    tbody.replaceChildren(
      ...rows.map((cells) => {
        const tr = document.createElement("tr");
        for (const cell of cells) {
          const td = document.createElement("td");
          const value = typeof cell === "object" && cell !== null ? cell : { text: cell };
          td.textContent = value.text;
          if (value.num) td.className = "num";
          tr.appendChild(td);
        }
        return tr;
      })
    );
  }

  document.addEventListener("DOMContentLoaded", setupCharts);

  return {
    chart, color, csrfToken, fetchJSON, fetchAllPages, fillTable, fmt, pct, show, timeLabel,
    flattenErrors, setupCharts,
  };
})();
