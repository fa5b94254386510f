/* ktproxy console — Overview: totals and charts from GET /v1/kt/stats, refreshed every
 * 10 s while the tab is visible. */
"use strict";

(function () {
  const KT = window.KT;
  const h = KT.h;
  const views = (KT.views = KT.views || {});
  const REFRESH_MS = 10000;
  const PRESETS = KT.RANGES.filter(([id]) => id !== "all" && id !== "custom");

  function tile(label, value, field, kind) {
    return h("div", { class: ["tile", kind && "tile-" + kind], dataset: { field } }, h("span", { class: "tile-label" }, label), h("span", { class: "tile-value" }, value));
  }

  views.overview = {
    mount(container, route) {
      let range = PRESETS.some(([id]) => id === route.params.range) ? route.params.range : "1h";
      let timer = null;
      let controller = null;
      let last = null;
      let resizeTimer = null;

      const select = h("select", { id: "ov-range" }, PRESETS.map(([id, label]) => h("option", { value: id }, label)));
      select.value = range;
      const updated = h("span", { class: "muted", id: "ov-updated", role: "status" });
      const body = h("div", { class: "overview-body", id: "overview-body" }, h("p", { class: "muted" }, "Loading statistics…"));
      container.appendChild(
        h(
          "section",
          { class: "view view-overview", "aria-labelledby": "overview-title" },
          h(
            "div",
            { class: "view-head" },
            h("h1", { id: "overview-title" }, "Overview"),
            h("div", { class: "inline-field" }, h("label", { for: "ov-range" }, "Time range"), select, updated)
          ),
          body
        )
      );
      select.addEventListener("change", () => {
        location.hash = "#/overview" + KT.query({ range: select.value === "1h" ? "" : select.value });
      });

      function render(stats) {
        const avail = body.clientWidth || 1000;
        const twoColumns = !window.matchMedia("(max-width: 1100px)").matches; // as in console.css
        const full = Math.max(320, avail - 34);
        const width = twoColumns ? Math.max(320, Math.floor((avail - 16) / 2) - 34) : full;
        const t = stats.totals || {};
        const blockRate = t.requests ? t.blocked / t.requests : 0;
        const tiles = h(
          "div",
          { class: "tiles", id: "ov-tiles" },
          tile("Requests", KT.fmtNum(t.requests), "requests"),
          tile("Blocked", `${KT.fmtNum(t.blocked)} (${KT.fmtPct(blockRate)})`, "blocked", t.blocked ? "danger" : null),
          tile("Redacted", KT.fmtNum(t.redacted), "redacted", t.redacted ? "warn" : null),
          tile("Errors", KT.fmtNum(t.errors), "errors", t.errors ? "danger" : null),
          tile("Streamed", KT.fmtNum(t.streamed), "streamed"),
          tile("Tokens", KT.fmtNum(t.tokens), "tokens"),
          tile("Latency p50", KT.fmtMs(t.p50_ms), "p50_ms"),
          tile("Latency p99", KT.fmtMs(t.p99_ms), "p99_ms")
        );
        const series = stats.series || [];
        const bucket = stats.bucket_s || 60;
        const chunk = stats.chunk_policy_us || [];
        const charts = h(
          "div",
          { class: "charts" },
          h(
            "div",
            { class: "chart-card wide" },
            KT.charts.timeBars({
              id: "chart-requests",
              title: "Requests per " + bucketLabel(bucket),
              series,
              bucket,
              width: full,
              yLabel: "requests",
              keys: [
                { field: "requests", label: "requests", cls: "s-primary" },
                { field: "errors", label: "errors", cls: "s-warn" },
                { field: "blocked", label: "blocked", cls: "s-danger" },
              ],
            })
          ),
          h(
            "div",
            { class: "chart-card" },
            KT.charts.timeLines({
              id: "chart-latency",
              title: "Gateway latency",
              series,
              bucket,
              width,
              unit: "ms",
              format: KT.fmtMs,
              keys: [
                { field: "p50_ms", label: "p50", cls: "s-primary" },
                { field: "p99_ms", label: "p99", cls: "s-accent" },
              ],
            })
          ),
          h(
            "div",
            { class: "chart-card" },
            KT.charts.timeLines({
              id: "chart-chunk",
              title: "Policy time per stream chunk",
              series: chunk,
              bucket,
              width,
              unit: "µs",
              format: (v) => (v >= 100 ? Math.round(v) : v.toFixed(v >= 10 ? 1 : 2)) + " µs",
              keys: [
                { field: "p50_us", label: "p50", cls: "s-primary" },
                { field: "p99_us", label: "p99", cls: "s-accent" },
              ],
            })
          ),
          h(
            "div",
            { class: "chart-card" },
            KT.charts.hBars({
              id: "chart-blocks",
              title: "Block rate by policy",
              width,
              cls: "bar-danger",
              format: KT.fmtPct,
              emptyText: "No request was blocked in this range.",
              items: (stats.blocks_by_policy || []).map((b) => ({ label: b.policy, value: b.rate, note: `${KT.fmtNum(b.blocked)} blocked` })),
            })
          ),
          h(
            "div",
            { class: "chart-card" },
            KT.charts.hBars({
              id: "chart-consumers",
              title: "Top consumer groups",
              width,
              items: (stats.top_consumers || []).map((c) => ({ label: c.name == null ? "(none)" : c.name, value: c.requests, note: `${KT.fmtNum(c.blocked)} blocked` })),
            })
          ),
          h(
            "div",
            { class: "chart-card" },
            KT.charts.hBars({
              id: "chart-models",
              title: "Top models",
              width,
              items: (stats.top_models || []).map((m) => ({ label: m.name == null ? "(none)" : m.name, value: m.requests, note: `${KT.fmtNum(m.blocked)} blocked` })),
            })
          )
        );
        const open = new Set([...body.querySelectorAll("details[open]")].map((d) => d.closest("figure")?.id));
        KT.clear(body).append(tiles, charts);
        for (const id of open) body.querySelector(`#${CSS.escape(id || "")} details`)?.setAttribute("open", "");
      }

      function bucketLabel(b) {
        if (b % 86400 === 0) return b === 86400 ? "day" : b / 86400 + " days";
        if (b % 3600 === 0) return b === 3600 ? "hour" : b / 3600 + " hours";
        if (b % 60 === 0) return b === 60 ? "minute" : b / 60 + " minutes";
        return b + " seconds";
      }

      async function load() {
        if (document.hidden) return;
        if (controller) controller.abort();
        controller = new AbortController();
        try {
          const stats = await KT.api("/v1/kt/stats" + KT.query({ since: range }), { signal: controller.signal });
          last = stats;
          render(stats);
          updated.textContent = "Updated " + KT.fmtClock(Date.now() / 1000, true);
          KT.banner.hide();
        } catch (err) {
          if (err.name === "AbortError") return;
          KT.banner.error(err, "Overview");
          if (!last) KT.clear(body).append(h("p", { class: "muted" }, "Statistics are not available."));
        }
      }

      function onVisibility() {
        if (!document.hidden) load();
      }
      function onResize() {
        clearTimeout(resizeTimer);
        resizeTimer = setTimeout(() => last && render(last), 200);
      }
      document.addEventListener("visibilitychange", onVisibility);
      window.addEventListener("resize", onResize);
      timer = setInterval(load, REFRESH_MS);
      load();

      return {
        update(r) {
          const next = PRESETS.some(([id]) => id === r.params.range) ? r.params.range : "1h";
          if (next !== range) {
            range = next;
            select.value = range;
            last = null;
            load();
          }
        },
        unmount() {
          clearInterval(timer);
          clearTimeout(resizeTimer);
          if (controller) controller.abort();
          document.removeEventListener("visibilitychange", onVisibility);
          window.removeEventListener("resize", onResize);
        },
      };
    },
  };
})();
