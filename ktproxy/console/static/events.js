/* ktproxy console — Events: the live audit table with filters and cursor paging,
 * and one event's detail.
 *
 * The table polls the first page every 2 s (while Live is on, the tab is visible and
 * the user is on the newest page) and inserts unseen records by (ts, chain, seq)
 * without touching the rows already shown, so focus and reading position survive.
 */
"use strict";

(function () {
  const KT = window.KT;
  const h = KT.h;
  const views = (KT.views = KT.views || {});
  const POLL_MS = 2000;
  const PAGE = 50;
  const FILTERS = ["consumer", "model", "target", "status", "decision", "streamed", "q"];
  const DEFAULT_RANGE = "24h";

  /** Newest first by (ts, chain, seq): records of one chain keep their written order. */
  function newerFirst(a, b) {
    if (b.ts !== a.ts) return b.ts - a.ts;
    if (a.chain !== b.chain) return a.chain < b.chain ? 1 : -1;
    return (b.seq || 0) - (a.seq || 0);
  }

  function pad2(n) {
    return String(n).padStart(2, "0");
  }

  function epochToLocal(value) {
    const n = Number(value);
    if (!value || !Number.isFinite(n)) return "";
    const d = new Date(n * 1000);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())}T${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }

  /** Filters as they live in the hash (only what differs from the defaults). */
  function filtersFrom(params) {
    const f = { range: params.range || DEFAULT_RANGE };
    if (!KT.RANGES.some(([id]) => id === f.range)) f.range = DEFAULT_RANGE;
    for (const name of FILTERS) if (params[name]) f[name] = params[name];
    const limit = Number(params.limit);
    if (Number.isInteger(limit) && limit >= 1 && limit <= 1000 && limit !== PAGE) f.limit = String(limit);
    if (f.range === "custom") {
      if (params.since) f.since = params.since;
      if (params.until) f.until = params.until;
    }
    return f;
  }

  function hashFor(filters) {
    const out = {};
    if (filters.range !== DEFAULT_RANGE) out.range = filters.range;
    for (const name of [...FILTERS, "since", "until", "limit"]) if (filters[name]) out[name] = filters[name];
    return "#/events" + KT.query(out);
  }

  /** The events API's parameters for `filters` (the time range computed now). */
  function apiParams(filters) {
    const p = {};
    for (const name of ["consumer", "model", "target", "status", "decision", "q"]) if (filters[name]) p[name] = filters[name];
    if (filters.streamed === "yes") p.streamed = "true";
    if (filters.streamed === "no") p.streamed = "false";
    const preset = KT.RANGES.find(([id]) => id === filters.range);
    if (preset && preset[2]) p.since = String(Math.floor(Date.now() / 1000) - preset[2]);
    if (filters.range === "custom") {
      if (filters.since) p.since = filters.since;
      if (filters.until) p.until = filters.until;
    }
    return p;
  }

  /* ---------- the table ---------- */

  const COLUMNS = ["Time", "Request", "Consumer", "Model", "Target", "Status", "Decision", "Streamed", "Latency", "Tokens"];

  function rowFor(record, isNew) {
    const decision = KT.decisionOf(record);
    const tokens = record.usage && record.usage.total_tokens != null ? KT.fmtNum(record.usage.total_tokens) : "—";
    const status = record.status != null ? String(record.status) : record.error ? "error" : "—";
    const statusClass = record.status >= 400 || (record.status == null && record.error) ? "status-bad" : "status-ok";
    const tr = h(
      "tr",
      { tabindex: "0", class: ["event-row", isNew && "row-new", decision === "blocked" && "row-blocked"], dataset: { id: record.id, decision } },
      h("td", { class: "nowrap" }, h("time", { datetime: new Date(record.ts * 1000).toISOString() }, KT.fmtTime(record.ts))),
      h("td", { class: "mono", title: record.id }, KT.shortId(record.id)),
      h("td", { class: "cell-text" }, record.consumer || "—"),
      h("td", { class: "cell-text" }, record.model || "—"),
      h("td", { class: "cell-text" }, record.target || "—"),
      h("td", { class: ["num", statusClass] }, status),
      h("td", null, KT.badge(decision)),
      h("td", null, record.streamed ? "yes" : "no"),
      h("td", { class: "num nowrap" }, KT.fmtMs(record.latency_ms)),
      h("td", { class: "num" }, tokens)
    );
    tr.setAttribute("aria-label", `${KT.fmtTime(record.ts)}, ${record.model || "no model"}, ${record.consumer || "no consumer"}, status ${status}, ${decision}. Press Enter for details.`);
    return tr;
  }

  views.events = {
    mount(container, route) {
      let filters = filtersFrom(route.params);
      let records = new Map(); // id → record
      let rows = new Map(); // id → <tr>
      let nextCursor = null;
      let cursorStack = []; // cursors of the pages before the one shown ([] = newest)
      let pageCursor = null; // cursor of the page shown (null = newest)
      let live = true;
      let busy = false;
      let timer = null;
      let controller = null;
      let lastOk = null;
      let failures = 0;

      KT.lastEventsHash = hashFor(filters);

      /* form */
      const rangeSelect = h("select", { id: "f-range" }, KT.RANGES.map(([id, label]) => h("option", { value: id }, label)));
      const since = h("input", { id: "f-since", type: "datetime-local" });
      const until = h("input", { id: "f-until", type: "datetime-local" });
      const customBox = h("div", { class: "filter-custom" }, field("f-since", "Since", since), field("f-until", "Until", until));
      const text = (id, label, list, extra) => h("input", Object.assign({ id, type: "text", autocomplete: "off", spellcheck: "false", list }, extra || {}));
      const consumer = text("f-consumer", "Consumer", "dl-consumer");
      const model = text("f-model", "Model", "dl-model");
      const target = text("f-target", "Target", "dl-target");
      const status = h("input", { id: "f-status", type: "number", min: "100", max: "599", inputmode: "numeric" });
      const decision = text("f-decision", "Decision", "dl-decision", { placeholder: "e.g. blocked" });
      const streamed = h("select", { id: "f-streamed" }, h("option", { value: "" }, "Any"), h("option", { value: "yes" }, "Yes"), h("option", { value: "no" }, "No"));
      const search = h("input", { id: "f-q", type: "search", form: "filters", autocomplete: "off", spellcheck: "false", placeholder: "Request id or part of it" });
      const lists = {
        consumer: h("datalist", { id: "dl-consumer" }),
        model: h("datalist", { id: "dl-model" }),
        target: h("datalist", { id: "dl-target" }),
        decision: h("datalist", { id: "dl-decision" }, ["blocked", "redacted", "none"].map((v) => h("option", { value: v }))),
      };
      const form = h(
        "form",
        { class: "filters", id: "filters", role: "search", "aria-label": "Filter events" },
        field("f-range", "Time range", rangeSelect),
        customBox,
        field("f-consumer", "Consumer", consumer),
        field("f-model", "Model", model),
        field("f-target", "Target", target),
        field("f-status", "Status", status, "filter-narrow"),
        field("f-decision", "Decision", decision),
        field("f-streamed", "Streamed", streamed, "filter-narrow"),
        h("div", { class: "filter-actions" }, h("button", { type: "submit", class: "btn btn-primary" }, "Apply"), h("button", { type: "button", class: "btn", id: "f-reset" }, "Reset")),
        Object.values(lists)
      );

      const liveToggle = h("input", { type: "checkbox", id: "live-toggle", role: "switch", checked: true });
      const liveStatus = h("span", { class: "live-status muted", id: "live-status" });
      const tbody = h("tbody", { id: "events-body" });
      const table = h(
        "table",
        { class: "data-table events-table", id: "events-table" },
        h("caption", { class: "visually-hidden" }, "Audit events, newest first. Focus a row and press Enter for its detail."),
        h("thead", null, h("tr", null, COLUMNS.map((c) => h("th", { scope: "col", class: ["Status", "Latency", "Tokens"].includes(c) ? "num" : null }, c))))
      );
      table.appendChild(tbody);
      const olderBtn = h("button", { type: "button", class: "btn", id: "page-older" }, "Older");
      const newerBtn = h("button", { type: "button", class: "btn", id: "page-newer" }, "Newer");
      const newestBtn = h("button", { type: "button", class: "btn", id: "page-newest" }, "Back to newest");
      const pageInfo = h("span", { class: "muted", id: "page-info" });
      const pageSize = h("select", { id: "page-size" }, [25, 50, 100, 200].map((n) => h("option", { value: String(n) }, String(n))));

      container.appendChild(
        h(
          "section",
          { class: "view view-events", "aria-labelledby": "events-title" },
          h(
            "div",
            { class: "view-head" },
            h("h1", { id: "events-title" }, "Events"),
            h("div", { class: "head-search" }, h("label", { for: "f-q" }, "Search request id"), search),
            h("div", { class: "live" }, h("label", { class: "switch", for: "live-toggle" }, liveToggle, h("span", null, "Live")), liveStatus)
          ),
          form,
          h("div", { class: "table-wrap", id: "events-wrap" }, table),
          h("div", { class: "pager" }, newestBtn, newerBtn, olderBtn, pageInfo, h("div", { class: "inline-field page-size" }, h("label", { for: "page-size" }, "Rows per page"), pageSize))
        )
      );

      function field(id, label, control, extraClass) {
        return h("div", { class: ["field", extraClass] }, h("label", { for: id }, label), control);
      }

      function fillForm() {
        rangeSelect.value = filters.range;
        customBox.hidden = filters.range !== "custom";
        since.value = epochToLocal(filters.since);
        until.value = epochToLocal(filters.until);
        consumer.value = filters.consumer || "";
        model.value = filters.model || "";
        target.value = filters.target || "";
        status.value = filters.status || "";
        decision.value = filters.decision || "";
        streamed.value = filters.streamed || "";
        search.value = filters.q || "";
        const size = filters.limit || String(PAGE);
        if (![...pageSize.options].some((o) => o.value === size)) pageSize.appendChild(h("option", { value: size }, size));
        pageSize.value = size;
      }

      function readForm() {
        const f = { range: rangeSelect.value };
        if (pageSize.value !== String(PAGE)) f.limit = pageSize.value;
        const values = { consumer: consumer.value, model: model.value, target: target.value, status: status.value, decision: decision.value, streamed: streamed.value, q: search.value };
        for (const [name, value] of Object.entries(values)) if (value.trim()) f[name] = value.trim();
        if (f.range === "custom") {
          const s = KT.localToEpoch(since.value);
          const u = KT.localToEpoch(until.value);
          if (s) f.since = s;
          if (u) f.until = u;
        }
        return f;
      }

      function apply() {
        const next = hashFor(readForm());
        if (next === location.hash) reload();
        else location.hash = next; // the router calls update()
      }

      form.addEventListener("submit", (e) => {
        e.preventDefault();
        apply();
      });
      rangeSelect.addEventListener("change", () => {
        customBox.hidden = rangeSelect.value !== "custom";
        if (rangeSelect.value !== "custom") apply();
      });
      streamed.addEventListener("change", apply);
      pageSize.addEventListener("change", apply);
      form.querySelector("#f-reset").addEventListener("click", () => {
        location.hash = "#/events";
      });
      liveToggle.addEventListener("change", () => {
        live = liveToggle.checked;
        KT.announce(live ? "Live updates on" : "Live updates paused");
        if (live && !pageCursor) poll();
        showStatus();
      });
      olderBtn.addEventListener("click", () => {
        if (!nextCursor) return;
        cursorStack.push(pageCursor);
        loadPage(nextCursor);
      });
      newerBtn.addEventListener("click", () => {
        if (!cursorStack.length) return;
        loadPage(cursorStack.pop());
      });
      newestBtn.addEventListener("click", () => {
        cursorStack = [];
        loadPage(null);
        table.querySelector("tbody tr")?.focus();
      });
      tbody.addEventListener("click", (e) => {
        const tr = e.target.closest("tr[data-id]");
        if (tr) open(tr.dataset.id);
      });
      tbody.addEventListener("keydown", (e) => {
        const tr = e.target.closest("tr[data-id]");
        if (!tr) return;
        if (e.key === "Enter" || e.key === " ") {
          e.preventDefault();
          open(tr.dataset.id);
        } else if (e.key === "ArrowDown" && tr.nextElementSibling) {
          e.preventDefault();
          tr.nextElementSibling.focus();
        } else if (e.key === "ArrowUp" && tr.previousElementSibling) {
          e.preventDefault();
          tr.previousElementSibling.focus();
        }
      });

      function open(id) {
        location.hash = "#/events/" + encodeURIComponent(id);
      }

      function showStatus() {
        const paged = pageCursor !== null;
        olderBtn.disabled = !nextCursor;
        newerBtn.disabled = !cursorStack.length && !paged;
        newestBtn.hidden = !paged;
        newerBtn.hidden = !paged;
        pageInfo.textContent = paged ? `Older events, page ${cursorStack.length + 1}` : "";
        let text;
        if (paged) text = "Paused while you read older events";
        else if (!live) text = "Paused";
        else if (document.hidden) text = "Paused while the tab is hidden";
        else text = lastOk ? "Live · updated " + KT.fmtClock(lastOk / 1000, true) : "Live";
        liveStatus.textContent = text;
        liveToggle.disabled = paged;
      }

      /** Replace the table with `list` (a fresh page). */
      function render(list) {
        records = new Map();
        rows = new Map();
        KT.clear(tbody);
        list.sort(newerFirst);
        for (const r of list) {
          records.set(r.id, r);
          const tr = rowFor(r, false);
          rows.set(r.id, tr);
          tbody.appendChild(tr);
        }
        if (!list.length) {
          tbody.appendChild(h("tr", { class: "empty" }, h("td", { colspan: String(COLUMNS.length) }, "No events match these filters.")));
        }
        learn(list);
      }

      /** Insert records not yet shown at their place; rows already shown stay put. */
      function merge(list) {
        const fresh = list.filter((r) => !records.has(r.id));
        if (!fresh.length) return 0;
        const empty = tbody.querySelector("tr.empty");
        if (empty) empty.remove();
        fresh.sort(newerFirst);
        const shown = [...records.values()].sort(newerFirst);
        for (const r of fresh) {
          const before = shown.find((s) => newerFirst(r, s) < 0);
          const tr = rowFor(r, true);
          tbody.insertBefore(tr, before ? rows.get(before.id) : null);
          records.set(r.id, r);
          rows.set(r.id, tr);
          shown.push(r);
          shown.sort(newerFirst);
        }
        learn(fresh);
        return fresh.length;
      }

      /** Seen consumers/models/targets/codes become suggestions in the filter inputs. */
      function learn(list) {
        const add = (dl, value) => {
          if (!value || [...dl.options].some((o) => o.value === value)) return;
          dl.appendChild(h("option", { value }));
        };
        for (const r of list) {
          add(lists.consumer, r.consumer);
          add(lists.model, r.model);
          add(lists.target, r.target);
          for (const d of r.decisions || []) {
            add(lists.decision, d.policy);
            add(lists.decision, d.code);
          }
        }
      }

      function pageLimit() {
        return Number(filters.limit) || PAGE;
      }

      async function fetchPage(cursor, limit) {
        if (controller) controller.abort();
        controller = new AbortController();
        const params = Object.assign(apiParams(filters), { limit: String(limit) });
        if (cursor) params.cursor = cursor;
        return KT.api("/v1/kt/events" + KT.query(params), { signal: controller.signal });
      }

      async function loadPage(cursor) {
        busy = true;
        try {
          const page = await fetchPage(cursor, pageLimit());
          pageCursor = cursor;
          nextCursor = page.next_cursor || null;
          render(page.data || []);
          ok();
        } catch (err) {
          failed(err);
        } finally {
          busy = false;
          showStatus();
        }
      }

      async function poll() {
        if (busy || !live || pageCursor !== null || document.hidden) {
          showStatus();
          return;
        }
        busy = true;
        try {
          const page = await fetchPage(null, pageLimit());
          if (!live || pageCursor !== null) return; // paused while the answer was on its way
          const data = page.data || [];
          const gap = records.size > 0 && data.length > 0 && page.has_more && !data.some((r) => records.has(r.id));
          if (gap) {
            render(data); // more arrived than one page holds: show the newest page afresh
            nextCursor = page.next_cursor || null;
            KT.announce("Many new events; showing the newest");
          } else {
            const added = merge(data);
            if (records.size <= data.length) nextCursor = page.next_cursor || null;
            if (added) KT.announce(added === 1 ? "1 new event" : `${added} new events`);
          }
          ok();
        } catch (err) {
          failed(err);
        } finally {
          busy = false;
          showStatus();
        }
      }

      function ok() {
        lastOk = Date.now();
        if (failures) KT.banner.hide();
        failures = 0;
      }

      function failed(err) {
        if (err && err.name === "AbortError") return;
        failures += 1;
        KT.banner.error(err, "Events");
      }

      function reload() {
        cursorStack = [];
        loadPage(null);
      }

      function onVisibility() {
        if (!document.hidden) poll();
        else showStatus();
      }
      document.addEventListener("visibilitychange", onVisibility);
      timer = setInterval(poll, POLL_MS);

      fillForm();
      reload();

      return {
        update(r) {
          filters = filtersFrom(r.params);
          KT.lastEventsHash = hashFor(filters);
          fillForm();
          reload();
        },
        unmount() {
          clearInterval(timer);
          document.removeEventListener("visibilitychange", onVisibility);
          if (controller) controller.abort();
        },
      };
    },
  };

  /* ---------- one event ---------- */

  function dl(items) {
    return h(
      "dl",
      { class: "kv" },
      items.filter(Boolean).map(([term, value, fieldName]) => [h("dt", null, term), h("dd", { dataset: fieldName ? { field: fieldName } : undefined }, value)])
    );
  }

  function section(title, id, ...children) {
    return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), children);
  }

  function hashValue(value, label, fieldName) {
    if (!value) return h("span", { class: "muted" }, "—");
    return h("span", { class: "hash" }, h("code", { title: value, dataset: { full: value, field: fieldName } }, KT.shortHash(value)), KT.copyButton(value, label));
  }

  function latencyBar(r) {
    const total = r.latency_ms;
    if (total == null || total <= 0) return null;
    const width = 600;
    const height = 28;
    const scale = (v) => Math.max(0, Math.min(width, (v / total) * width));
    const up = r.upstream_ms != null ? Math.min(r.upstream_ms, total) : null;
    const parts = [];
    if (up != null) {
      parts.push(KT.s("rect", { x: "0", y: "4", width: String(scale(up)), height: String(height - 8), class: "lat-upstream" }, KT.s("title", null, "Upstream " + KT.fmtMs(up))));
      parts.push(KT.s("rect", { x: String(scale(up)), y: "4", width: String(width - scale(up)), height: String(height - 8), class: "lat-gateway" }, KT.s("title", null, "Gateway and body " + KT.fmtMs(total - up))));
    } else {
      parts.push(KT.s("rect", { x: "0", y: "4", width: String(width), height: String(height - 8), class: "lat-gateway" }, KT.s("title", null, "Gateway latency " + KT.fmtMs(total))));
    }
    if (r.ttft_ms != null && r.ttft_ms <= total) {
      const x = scale(r.ttft_ms);
      parts.push(KT.s("line", { x1: String(x), x2: String(x), y1: "0", y2: String(height), class: "lat-ttft" }, KT.s("title", null, "First token " + KT.fmtMs(r.ttft_ms))));
    }
    const label = `Latency ${KT.fmtMs(total)}` + (up != null ? `, of which upstream ${KT.fmtMs(up)}` : "") + (r.ttft_ms != null ? `, first token at ${KT.fmtMs(r.ttft_ms)}` : "");
    return h(
      "figure",
      { class: "latency-figure" },
      KT.s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", class: "latency-bar", role: "img", "aria-label": label }, parts),
      h(
        "figcaption",
        { class: "legend" },
        up != null ? h("span", { class: "key key-upstream" }, "upstream") : null,
        h("span", { class: "key key-gateway" }, up != null ? "gateway overhead + body" : "gateway"),
        r.ttft_ms != null ? h("span", { class: "key key-ttft" }, "first token") : null
      )
    );
  }

  function countsText(counts) {
    const entries = Object.entries(counts || {});
    if (!entries.length) return h("span", { class: "muted" }, "—");
    return h("ul", { class: "counts" }, entries.map(([kind, n]) => h("li", null, h("span", { class: "mono" }, kind), " × " + n)));
  }

  function renderDetail(container, r) {
    const decision = KT.decisionOf(r);
    const overhead = r.latency_ms != null && r.upstream_ms != null ? r.latency_ms - r.upstream_ms : null;
    const usage = r.usage || {};
    const decisions = r.decisions || [];
    const attempts = r.attempts || [];
    const content = r.content;

    const decisionsBody = decisions.length
      ? KT.table(
          { id: "detail-decisions" },
          ["Policy", "Action", "Code", "Redaction counts by type"],
          decisions.map((d) =>
            h(
              "tr",
              { dataset: { policy: d.policy } },
              h("td", null, d.policy),
              h("td", null, KT.badge(d.action === "block" ? "blocked" : d.action === "log" ? "none" : Object.keys(d.counts || {}).length ? "redacted" : "none", d.action)),
              h("td", { class: "mono" }, d.code || "—"),
              h("td", null, countsText(d.counts))
            )
          )
        )
      : h("p", { class: "muted" }, "No policy decisions recorded.");

    const attemptsBody = attempts.length
      ? KT.table(
          { id: "detail-attempts" },
          ["#", "Target", "Outcome", "Status", "Time"],
          attempts.map((a, i) =>
            h("tr", null, h("td", { class: "num" }, String(i + 1)), h("td", null, a.target), h("td", null, a.outcome), h("td", { class: "num" }, a.status != null ? String(a.status) : "—"), h("td", { class: "num" }, KT.fmtMs(a.ms)))
          )
        )
      : h("p", { class: "muted" }, "No upstream call (refused or blocked before routing).");

    let contentSection = null;
    if (content && (content.request || content.response != null)) {
      const messages = (content.request || []).map((m) => h("div", { class: "message" }, h("span", { class: "message-role" }, String(m.role || "?")), h("pre", { class: "content" }, typeof m.content === "string" ? m.content : JSON.stringify(m.content, null, 2))));
      contentSection = section(
        "Stored content (redacted)",
        "d-content",
        content.request ? [h("h3", null, "Request"), messages] : null,
        content.response != null ? [h("h3", null, "Response"), h("pre", { class: "content" }, content.response)] : null
      );
    }

    const back = h("a", { href: KT.lastEventsHash, class: "back-link" }, "← Events");
    container.appendChild(
      h(
        "article",
        { class: "view view-detail", "aria-labelledby": "detail-title", id: "event-detail", dataset: { id: r.id } },
        h("div", { class: "view-head" }, h("div", null, back, h("h1", { id: "detail-title" }, "Event ", h("span", { class: "mono" }, KT.shortId(r.id)), " ", KT.badge(decision))), h("p", { class: "muted hint" }, "Esc returns to the list")),
        h(
          "div",
          { class: "detail-grid" },
          section(
            "Exchange",
            "d-exchange",
            dl([
              ["Request id", h("span", { class: "hash" }, h("code", { dataset: { field: "id" } }, r.id), KT.copyButton(r.id, "request id"))],
              ["Time", KT.fmtTime(r.ts), "ts"],
              ["Endpoint", r.endpoint, "endpoint"],
              ["Consumer", r.consumer || "—", "consumer"],
              ["Model", r.model || "—", "model"],
              ["Target", r.target ? `${r.target}${r.provider ? " (" + r.provider + ")" : ""}` : "—", "target"],
              r.upstream_model ? ["Upstream model", r.upstream_model, "upstream_model"] : null,
              ["Status", r.status != null ? String(r.status) : "—", "status"],
              ["Streamed", r.streamed ? "yes" : "no", "streamed"],
              r.error ? ["Error", h("span", { class: "mono status-bad" }, r.error), "error"] : null,
            ])
          ),
          section(
            "Latency",
            "d-latency",
            latencyBar(r),
            dl([
              ["Gateway latency", KT.fmtMs(r.latency_ms), "latency_ms"],
              ["Upstream (to headers)", KT.fmtMs(r.upstream_ms), "upstream_ms"],
              ["Time to first token", KT.fmtMs(r.ttft_ms), "ttft_ms"],
              ["Gateway overhead (latency − upstream)", KT.fmtMs(overhead), "overhead_ms"],
            ])
          ),
          section("Policy decisions", "d-decisions", decisionsBody),
          section(
            "Tokens",
            "d-tokens",
            dl([
              ["Prompt", KT.fmtNum(usage.prompt_tokens), "prompt_tokens"],
              ["Completion", KT.fmtNum(usage.completion_tokens), "completion_tokens"],
              ["Total", KT.fmtNum(usage.total_tokens), "total_tokens"],
            ])
          ),
          section("Upstream attempts", "d-attempts", attemptsBody),
          section(
            "Hash chain",
            "d-chain",
            dl([
              ["Chain", r.chain ? h("code", { dataset: { field: "chain" } }, r.chain) : "—"],
              ["Sequence", r.seq ? String(r.seq) : "—", "seq"],
              ["Previous hash", hashValue(r.prev_hash, "previous hash", "prev_hash")],
              ["Hash", hashValue(r.hash, "hash", "hash")],
            ])
          ),
          contentSection
        )
      )
    );
  }

  views.detail = {
    mount(container, route) {
      let controller = new AbortController();
      let retry = null;
      const loading = h("p", { class: "muted", role: "status" }, "Loading event…");
      container.appendChild(loading);

      async function load(id) {
        try {
          const record = await KT.api("/v1/kt/events/" + encodeURIComponent(id), { signal: controller.signal });
          KT.clear(container);
          renderDetail(container, record);
          const title = document.getElementById("detail-title");
          if (title) {
            title.setAttribute("tabindex", "-1");
            title.focus();
          }
        } catch (err) {
          if (err.name === "AbortError") return;
          KT.clear(container);
          container.appendChild(h("p", null, h("a", { href: KT.lastEventsHash, class: "back-link" }, "← Events")));
          KT.banner.error(err, err.status === 404 ? "Event not found" : "Event");
          if (err.status === 503 || err.status === 0) {
            const wait = Math.min(30, Number(err.retryAfter) || 5) * 1000;
            retry = setTimeout(() => load(id), wait); // the store comes back: so does the page
          }
        }
      }
      load(route.id);
      return {
        update(r) {
          clearTimeout(retry);
          controller.abort();
          controller = new AbortController();
          KT.clear(container);
          load(r.id);
        },
        unmount() {
          clearTimeout(retry);
          controller.abort();
        },
      };
    },
  };
})();
