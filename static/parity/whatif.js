/* What-if: posts the proposal to /api/v1/whatif/ and compares the two replays. */
"use strict";

(function () {
  const P = window.Parity;

  // A datetime-local value is read as UTC, the time zone the page labels it with.
  function unixSeconds(value) {
    const ms = Date.parse(value + (value.length === 16 ? ":00Z" : "Z"));
    return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
  }

  function proposal(form) {
    const tenants = [...form.querySelectorAll("input[name=tenants]:checked")].map((i) => i.value);
    const weights = {};
    for (const input of form.querySelectorAll("input[data-tenant]")) {
      if (tenants.includes(input.dataset.tenant)) weights[input.dataset.tenant] = input.value.trim();
    }
    const body = {
      start_time: unixSeconds(form.elements.start.value),
      end_time: unixSeconds(form.elements.end.value),
      tenants,
      weights,
      policy: form.elements.policy.value,
    };
    if (form.elements.profile.value) body.profile = form.elements.profile.value;
    return body;
  }

  function clearErrors(form) {
    form.querySelectorAll(".errors.field-error").forEach((e) => e.remove());
    form.querySelectorAll(".has-error").forEach((e) => e.classList.remove("has-error"));
    const general = document.getElementById("whatif-errors");
    general.replaceChildren();
    P.show(general, false);
  }

  function messagesOf(value) {
    if (Array.isArray(value)) return value.map(String);
    if (value && typeof value === "object") return P.flattenErrors(value);
    return [String(value)];
  }

  /* 400 bodies are {"field": ["message"]}: put each next to its input, the rest on top. */
  function showErrors(form, body, fallback) {
    const general = document.getElementById("whatif-errors");
    const entries = body && typeof body === "object" && !Array.isArray(body) ? Object.entries(body) : [["detail", [fallback]]];
    for (const [field, value] of entries) {
      const holder = form.querySelector('[data-error-for="' + CSS.escape(field) + '"]');
      const list = document.createElement("ul");
      list.className = "errors field-error";
      for (const message of messagesOf(value)) {
        const li = document.createElement("li");
        li.textContent = holder ? message : (field === "detail" || field === "non_field_errors" ? "" : field + ": ") + message;
        list.appendChild(li);
      }
      if (holder) {
        holder.classList.add("has-error");
        holder.appendChild(list);
      } else {
        general.append(...list.children);
        P.show(general, true);
      }
    }
  }

  function byTenant(scenario) {
    return Object.fromEntries(scenario.tenants.map((t) => [t.tenant, t]));
  }

  function draw(result) {
    const current = byTenant(result.scenarios.current);
    const proposed = byTenant(result.scenarios.proposed);
    const names = [...new Set([...Object.keys(current), ...Object.keys(proposed)])].sort();
    const field = (scenario, name, key) => (scenario[name] ? scenario[name][key] : null);
    P.chart("chart-whatif-share", {
      type: "bar",
      data: {
        labels: names,
        datasets: [
          { label: "Current", data: names.map((n) => 100 * (field(current, n, "served_share") || 0)), backgroundColor: "#9ca3af" },
          { label: "Proposed", data: names.map((n) => 100 * (field(proposed, n, "served_share") || 0)), backgroundColor: P.color(0) },
          { label: "Proposed weight share", data: names.map((n) => 100 * (field(proposed, n, "weight_share") || 0)), backgroundColor: P.color(1) },
        ],
      },
      options: { scales: { y: { beginAtZero: true, suggestedMax: 100, title: { display: true, text: "%" } } } },
    });
    P.chart("chart-whatif-latency", {
      type: "bar",
      data: {
        labels: names,
        datasets: [
          { label: "Current", data: names.map((n) => field(current, n, "latency_p95_ms")), backgroundColor: "#9ca3af" },
          { label: "Proposed", data: names.map((n) => field(proposed, n, "latency_p95_ms")), backgroundColor: P.color(0) },
        ],
      },
      options: { scales: { y: { beginAtZero: true, title: { display: true, text: "ms" } } } },
    });
    P.fillTable(document.querySelector("#whatif-table tbody"), names.map((n) => [
      n,
      ...[current, proposed].flatMap((s) => [
        { text: P.pct(field(s, n, "weight_share")), num: true },
        { text: P.pct(field(s, n, "served_share")), num: true },
        { text: P.fmt(field(s, n, "ttft_p95_ms"), 0), num: true },
        { text: P.fmt(field(s, n, "latency_p95_ms"), 0), num: true },
      ]),
    ]));
    const c = result.scenarios.current;
    const p = result.scenarios.proposed;
    document.getElementById("whatif-summary").textContent =
      P.fmt(result.num_requests, 0) + " recorded requests replayed with the " + result.policy + " policy" +
      (result.profile ? " on " + result.profile : "") + ". Throughput " + P.fmt(c.throughput_tokens_per_s) +
      " → " + P.fmt(p.throughput_tokens_per_s) + " tokens/s; makespan " + P.fmt(c.makespan_s) + " → " +
      P.fmt(p.makespan_s) + " s.";
  }

  async function run(form) {
    const status = document.getElementById("whatif-status");
    const button = document.getElementById("whatif-run");
    clearErrors(form);
    status.textContent = "Replaying…";
    button.disabled = true;
    try {
      const result = await P.fetchJSON(form.dataset.url, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": P.csrfToken() },
        body: JSON.stringify(proposal(form)),
      });
      const results = document.getElementById("whatif-results");
      P.show(results, true);
      draw(result);
      status.textContent = "Done.";
    } catch (err) {
      status.textContent = "";
      showErrors(form, err.status === 400 ? err.body : null, err.message);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("whatif-form");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(form);
    });
  });
})();
