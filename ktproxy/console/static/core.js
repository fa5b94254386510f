/* ktproxy console — shared helpers: DOM building, the admin API client, formatting,
 * the error banner and the polite live region.
 *
 * Every piece of data reaches the page through textContent or attributes set here;
 * nothing is ever parsed as HTML, so a model name like `<img onerror=...>` stays text.
 */
"use strict";

(function () {
  const KT = (window.KT = window.KT || {});
  const KEY_STORE = "ktproxy.console.adminKey";
  const SVG_NS = "http://www.w3.org/2000/svg";

  /** Append children (nodes, strings, arrays; null skipped) to `node`. */
  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else if (child instanceof Node) node.appendChild(child);
      else node.appendChild(document.createTextNode(String(child)));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
      else if (name === "text") node.textContent = String(value);
      else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
  }

  /** `h("td", {class: "x"}, "text", child)`: an HTML element built without parsing. */
  KT.h = function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    return append(node, children);
  };

  /** The same for SVG elements. */
  KT.s = function s(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return append(node, children);
  };

  KT.clear = function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  };

  /* ---------- the admin key (this tab only) ---------- */

  KT.key = {
    get() {
      try {
        return sessionStorage.getItem(KEY_STORE);
      } catch (e) {
        return null;
      }
    },
    set(value) {
      sessionStorage.setItem(KEY_STORE, value);
    },
    clear() {
      try {
        sessionStorage.removeItem(KEY_STORE);
      } catch (e) {
        /* storage disabled: nothing kept */
      }
    },
  };

  /* ---------- the admin API ---------- */

  class ApiError extends Error {
    constructor(status, message, code, type, retryAfter) {
      super(message);
      this.status = status;
      this.code = code || null;
      this.type = type || null;
      this.retryAfter = retryAfter || null;
    }
  }
  KT.ApiError = ApiError;

  /** Listeners told when the key stops working (401), so the app can sign out. */
  KT.onUnauthorized = null;

  /**
   * Call the admin API. `opts.key` overrides the stored key (sign-in check).
   * Resolves with the JSON body; rejects with an ApiError carrying the
   * OpenAI-shaped error's message and code.
   */
  KT.api = async function api(path, opts = {}) {
    const key = opts.key !== undefined ? opts.key : KT.key.get();
    const headers = { Accept: "application/json" };
    if (key) headers["x-kt-admin-key"] = key;
    const init = { method: opts.method || "GET", headers, cache: "no-store", credentials: "omit", signal: opts.signal };
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      throw new ApiError(0, "Cannot reach the gateway. Check that it is running; retrying.", "network_error");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (e) {
      body = null;
    }
    if (!response.ok) {
      const err = body && body.error ? body.error : {};
      const message = typeof err.message === "string" ? err.message : `The gateway answered HTTP ${response.status}.`;
      const error = new ApiError(response.status, message, err.code, err.type, response.headers.get("Retry-After"));
      if (response.status === 401 && opts.key === undefined && KT.onUnauthorized) KT.onUnauthorized(error);
      throw error;
    }
    return body;
  };

  /** A query string from an object, skipping empty values. */
  KT.query = function query(params) {
    const usp = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value === null || value === undefined || value === "") continue;
      usp.set(name, String(value));
    }
    const text = usp.toString();
    return text ? "?" + text : "";
  };

  /* ---------- banner and live region ---------- */

  KT.banner = {
    /* Polite, and unchanged text is not re-set: a failing poll every 2 s must not
       make a screen reader repeat itself. */
    show(message, kind) {
      const banner = document.getElementById("banner");
      const text = document.getElementById("banner-text");
      if (text.textContent !== message || banner.hidden) text.textContent = message;
      banner.className = "banner banner-" + (kind || "error");
      banner.hidden = false;
    },
    hide() {
      document.getElementById("banner").hidden = true;
    },
    /** Show an API error the way an operator needs to read it. */
    error(err, what) {
      if (err && err.name === "AbortError") return;
      let message = err && err.message ? err.message : String(err);
      if (err && err.code === "audit_store_unavailable") {
        message = "Audit store unavailable: " + message + " Retrying.";
      } else if (err && err.code === "admin_disabled") {
        message = "The admin API is disabled on this gateway. Set admin.key in the policy config, then reload the gateway.";
      }
      KT.banner.show((what ? what + ": " : "") + message, "error");
    },
  };

  let announceTimer = null;
  /** Say `message` politely to screen readers (coalesced so bursts do not chatter). */
  KT.announce = function announce(message) {
    const region = document.getElementById("live-region");
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => {
      region.textContent = message;
    }, 150);
  };

  /* ---------- formatting ---------- */

  const pad = (n, w = 2) => String(n).padStart(w, "0");

  /** Local time `YYYY-MM-DD HH:MM:SS` from epoch seconds. */
  KT.fmtTime = function fmtTime(ts) {
    if (ts === null || ts === undefined) return "—";
    const d = new Date(ts * 1000);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  };

  KT.fmtClock = function fmtClock(ts, withSeconds) {
    const d = new Date(ts * 1000);
    return withSeconds ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  };

  KT.fmtMs = function fmtMs(ms) {
    if (ms === null || ms === undefined) return "—";
    if (ms >= 10000) return (ms / 1000).toFixed(1) + " s";
    if (ms >= 100) return Math.round(ms) + " ms";
    if (ms >= 10) return ms.toFixed(1) + " ms";
    return ms.toFixed(2) + " ms";
  };

  KT.fmtNum = function fmtNum(n) {
    if (n === null || n === undefined) return "—";
    return Number(n).toLocaleString("en-US");
  };

  KT.fmtPct = function fmtPct(rate) {
    if (rate === null || rate === undefined) return "—";
    const pct = rate * 100;
    return (pct >= 10 || pct === 0 ? pct.toFixed(0) : pct.toFixed(pct >= 1 ? 1 : 2)) + " %";
  };

  // Ids are a per-process prefix and a counter: the tail is what tells them apart.
  KT.shortId = (id) => (id ? "…" + String(id).slice(-8) : "—");
  KT.shortHash = (h) => (h ? String(h).slice(0, 12) + "…" : "—");

  /** `blocked`, `redacted` or `none`: the same summary the audit store filters on. */
  KT.decisionOf = function decisionOf(record) {
    const decisions = record.decisions || [];
    if (decisions.some((d) => d.action === "block")) return "blocked";
    if (decisions.some((d) => d.action !== "log" && d.counts && Object.keys(d.counts).length)) return "redacted";
    return "none";
  };

  /** A scrollable data table: `columns` are header texts (or [text, class]), `rows` are
   * built <tr> elements; `caption`, when given, is for screen readers only. */
  KT.table = function table(attrs, columns, rows, caption) {
    const head = columns.map((c) => (Array.isArray(c) ? KT.h("th", { scope: "col", class: c[1] }, c[0]) : KT.h("th", { scope: "col" }, c)));
    return KT.h(
      "div",
      { class: "table-wrap" },
      KT.h(
        "table",
        { ...attrs, class: "data-table" + (attrs && attrs.class ? " " + attrs.class : "") },
        caption ? KT.h("caption", { class: "visually-hidden" }, caption) : null,
        KT.h("thead", null, KT.h("tr", null, head)),
        KT.h("tbody", null, rows)
      )
    );
  };

  KT.badge = function badge(kind, label) {
    return KT.h("span", { class: "badge badge-" + kind }, label || kind);
  };

  /** A copy-to-clipboard button for `value` (labelled for screen readers). */
  KT.copyButton = function copyButton(value, label) {
    const button = KT.h("button", { type: "button", class: "btn btn-quiet btn-small", "aria-label": "Copy " + label }, "Copy");
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(value);
        button.textContent = "Copied";
        KT.announce(label + " copied");
      } catch (e) {
        button.textContent = "Select & copy";
      }
      setTimeout(() => (button.textContent = "Copy"), 1500);
    });
    return button;
  };

  /** Seconds of the range presets used by events and overview. */
  KT.RANGES = [
    ["15m", "Last 15 minutes", 900],
    ["1h", "Last hour", 3600],
    ["24h", "Last 24 hours", 86400],
    ["7d", "Last 7 days", 604800],
    ["all", "All time", null],
    ["custom", "Custom…", null],
  ];

  /** A `datetime-local` value (local time) → epoch seconds, or "" when empty/invalid. */
  KT.localToEpoch = function localToEpoch(value) {
    if (!value) return "";
    const t = new Date(value).getTime();
    return Number.isFinite(t) ? String(Math.floor(t / 1000)) : "";
  };
})();
