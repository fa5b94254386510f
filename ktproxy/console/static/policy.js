/* ktproxy console — Policy: the loaded config (GET /v1/kt/config) and the playground
 * (POST /v1/kt/playground), which runs a consumer group's real chain on a text.
 *
 * Findings are highlighted by building text nodes and <mark>s from code-point spans
 * (Array.from(text) indexes code points, as the API does); the text is never parsed.
 */
"use strict";

(function () {
  const KT = window.KT;
  const h = KT.h;
  const views = (KT.views = KT.views || {});
  const ROLES = ["user", "system", "assistant", "tool", "developer"];

  function decisionBadge(decision) {
    const kind = { block: "blocked", redact: "redacted", log: "none", allow: "none" }[decision] || "none";
    return KT.badge(kind, decision);
  }

  /** `text` with every finding span wrapped in a <mark> (overlaps split at boundaries). */
  function highlighted(text, findings) {
    const chars = Array.from(text);
    const spans = findings.filter((f) => Number.isInteger(f.start) && Number.isInteger(f.end) && f.end > f.start && f.start >= 0 && f.start < chars.length);
    const cuts = new Set([0, chars.length]);
    for (const f of spans) {
      cuts.add(f.start);
      cuts.add(Math.min(f.end, chars.length));
    }
    const points = [...cuts].sort((a, b) => a - b);
    const pre = h("pre", { class: "highlighted", id: "pg-highlighted" });
    for (let i = 0; i < points.length - 1; i++) {
      const a = points[i];
      const b = points[i + 1];
      const piece = chars.slice(a, b).join("");
      const covering = spans.filter((f) => f.start <= a && f.end >= b);
      if (!covering.length) {
        pre.appendChild(document.createTextNode(piece));
        continue;
      }
      const blocking = covering.some((f) => f._action === "block");
      const label = covering.map((f) => `${f._policy}: ${f.kind || f.rule || "finding"}`).join("; ");
      pre.appendChild(h("mark", { class: ["finding", blocking ? "finding-block" : "finding-pii"], title: label, dataset: { kind: covering.map((f) => f.kind || f.rule || "").join(" ") } }, piece));
    }
    return pre;
  }

  /** What would go on; for a block, nothing, plus what the rewriting policies made of it. */
  function outputSection(a, policies) {
    if (a.output_text != null) return h("pre", { class: "content", id: "pg-output" }, a.output_text);
    if (a.decision !== "block") return h("p", { class: "muted", id: "pg-output" }, "—");
    const rewritten = policies.filter((p) => p.output_text != null).pop();
    return h(
      "div",
      { id: "pg-output" },
      h("p", null, `Nothing goes on: ${a.blocked_by || "a policy"} blocks the text.`),
      rewritten ? [h("p", { class: "muted small" }, `Without the block, after ${rewritten.policy}:`), h("pre", { class: "content", id: "pg-output-rewritten" }, rewritten.output_text)] : null
    );
  }

  function policyCard(p) {
    const findings = p.findings || [];
    const counts = Object.entries(p.counts || {});
    const meta = [];
    if (p.code) meta.push(["Code", h("span", { class: "mono" }, p.code)]);
    if (p.score !== undefined && p.score !== null) meta.push(["Score", `${Number(p.score).toFixed(2)}${p.threshold != null ? " / threshold " + Number(p.threshold).toFixed(2) : ""}`]);
    if (counts.length) meta.push(["Counts", counts.map(([k, n]) => `${k} × ${n}`).join(", ")]);
    return h(
      "li",
      { class: ["policy-card", p.applies === false && "not-applied"], dataset: { policy: p.policy, action: p.action || "" } },
      h("div", { class: "policy-card-head" }, h("h4", null, p.policy), p.action ? KT.badge(p.action === "block" ? "blocked" : ["redact", "mask", "pseudonymize"].includes(p.action) && (findings.length || counts.length) ? "redacted" : "none", p.action) : null, p.applies === false ? h("span", { class: "muted" }, "does not apply") : null),
      meta.length ? h("dl", { class: "kv compact" }, meta.map(([k, v]) => [h("dt", null, k), h("dd", null, v)])) : null,
      findings.length
        ? h(
            "ul",
            { class: "findings" },
            findings.map((f) => h("li", null, h("span", { class: "mono" }, f.kind || f.rule || "finding"), ` at ${f.start}–${f.end}`, f.text ? [": ", h("q", null, f.text)] : null, f.weight != null ? ` (weight ${f.weight})` : null, f.source && f.source !== "text" ? ` in ${f.source}` : null))
          )
        : h("p", { class: "muted small" }, "No findings."),
      p.output_text != null ? [h("p", { class: "small muted" }, "Rewrites the text to:"), h("pre", { class: "content small" }, p.output_text)] : null,
      p.note ? h("p", { class: "note small" }, p.note) : null
    );
  }

  views.policy = {
    mount(container) {
      let controller = new AbortController();
      let running = null;
      const info = h("div", { class: "policy-info", id: "policy-info" }, h("p", { class: "muted" }, "Loading configuration…"));

      const text = h("textarea", { id: "pg-text", rows: "7", spellcheck: "false", "aria-describedby": "pg-hint" });
      const consumer = h("select", { id: "pg-consumer" }, h("option", { value: "" }, "default"));
      const role = h("select", { id: "pg-role" }, ROLES.map((r) => h("option", { value: r }, r)));
      const radio = (value, label, checked) => h("label", { class: "radio" }, h("input", { type: "radio", name: "pg-direction", value, checked, id: "pg-dir-" + value }), " " + label);
      const directions = h("fieldset", { class: "radios" }, h("legend", null, "Direction"), radio("request", "Request", true), radio("response", "Response", false));
      const run = h("button", { type: "submit", class: "btn btn-primary", id: "pg-run" }, "Run");
      const result = h("div", { class: "pg-result", id: "pg-result", "aria-live": "polite" });
      const form = h(
        "form",
        { class: "playground-form", id: "pg-form", method: "post" },
        h("div", { class: "field" }, h("label", { for: "pg-text" }, "Text to check"), text, h("p", { class: "muted small", id: "pg-hint" }, "Runs the real policy chain of the chosen consumer group. Nothing is sent upstream or audited. Ctrl+Enter runs.")),
        h("div", { class: "pg-controls" }, directions, h("div", { class: "field" }, h("label", { for: "pg-consumer" }, "Consumer group"), consumer), h("div", { class: "field", id: "pg-role-field" }, h("label", { for: "pg-role" }, "Role"), role), h("div", { class: "field field-button" }, run))
      );

      container.appendChild(
        h(
          "section",
          { class: "view view-policy", "aria-labelledby": "policy-title" },
          h("div", { class: "view-head" }, h("h1", { id: "policy-title" }, "Policy")),
          info,
          h("section", { class: "card playground", "aria-labelledby": "pg-title" }, h("h2", { id: "pg-title" }, "Playground"), form, result)
        )
      );

      form.addEventListener("submit", (e) => {
        e.preventDefault();
        play();
      });
      text.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
          e.preventDefault();
          play();
        }
      });
      for (const input of directions.querySelectorAll("input")) {
        input.addEventListener("change", () => {
          document.getElementById("pg-role-field").hidden = direction() !== "request";
        });
      }

      function direction() {
        const checked = directions.querySelector("input:checked");
        return checked ? checked.value : "request";
      }

      async function play() {
        if (running) running.abort();
        running = new AbortController();
        const body = { text: text.value, direction: direction() };
        if (consumer.value) body.consumer = consumer.value;
        if (body.direction === "request") body.role = role.value;
        run.disabled = true;
        run.textContent = "Running…";
        try {
          const answer = await KT.api("/v1/kt/playground", { method: "POST", body, signal: running.signal });
          renderResult(body.text, answer);
          KT.announce(`Decision: ${answer.decision}${answer.blocked_by ? " by " + answer.blocked_by : ""}`);
        } catch (err) {
          if (err.name === "AbortError") return;
          KT.clear(result).append(h("p", { class: "form-error", role: "alert" }, `The playground failed: ${err.message}`));
        } finally {
          run.disabled = false;
          run.textContent = "Run";
        }
      }

      function renderResult(submitted, a) {
        const policies = a.policies || [];
        const findings = policies.filter((p) => p.applies !== false).flatMap((p) => (p.findings || []).map((f) => Object.assign({}, f, { _policy: p.policy, _action: p.action })));
        KT.clear(result).append(
          h(
            "div",
            { class: "pg-decision" },
            h("h3", null, "Decision ", h("span", { id: "pg-decision" }, decisionBadge(a.decision))),
            h("p", { class: "muted small" }, `Chain of ${a.consumer || "default"} (${a.direction}): ${(a.chain || []).join(" → ") || "empty"}`),
            a.blocked_by || a.code || a.message
              ? h(
                  "dl",
                  { class: "kv compact" },
                  a.blocked_by ? [h("dt", null, "Blocked by"), h("dd", { id: "pg-blocked-by" }, a.blocked_by)] : null,
                  a.code ? [h("dt", null, "Code"), h("dd", { class: "mono", id: "pg-code" }, a.code)] : null,
                  a.message ? [h("dt", null, "Message"), h("dd", { id: "pg-message" }, a.message)] : null
                )
              : null
          ),
          h("h3", null, "Findings in the text"),
          findings.length ? highlighted(submitted, findings) : h("p", { class: "muted" }, "Nothing found."),
          h("h3", null, "Policies"),
          h("ul", { class: "policy-cards", id: "pg-policies" }, policies.map(policyCard)),
          h("h3", null, "Output text"),
          outputSection(a, policies)
        );
      }

      function renderInfo(cfg) {
        const lint = cfg.lint || { ok: true, problems: [] };
        const problems = lint.problems || [];
        const chains = Object.entries(cfg.chains || {});
        for (const [name] of chains) if (name !== "default") consumer.appendChild(h("option", { value: name }, name));
        const loaded = cfg.loaded_at ? KT.fmtTime(cfg.loaded_at) : "—";
        KT.clear(info).append(
          h(
            "div",
            { class: "detail-grid" },
            h(
              "section",
              { class: "card", "aria-labelledby": "cfg-title" },
              h("h2", { id: "cfg-title" }, "Loaded configuration"),
              h(
                "dl",
                { class: "kv" },
                h("dt", null, "Loaded at"),
                h("dd", { id: "cfg-loaded" }, loaded),
                h("dt", null, "Source"),
                h("dd", { class: "mono break", id: "cfg-source" }, cfg.source || "—"),
                h("dt", null, "sha256"),
                h("dd", null, cfg.sha256 ? h("span", { class: "hash" }, h("code", { title: cfg.sha256, id: "cfg-sha" }, KT.shortHash(cfg.sha256)), KT.copyButton(cfg.sha256, "config sha256")) : "—"),
                h("dt", null, "Lint"),
                h(
                  "dd",
                  { id: "cfg-lint" },
                  lint.ok ? KT.badge("ok", "ok") : KT.badge("blocked", "problems"),
                  ` ${lint.errors || 0} error${lint.errors === 1 ? "" : "s"}, ${lint.warnings || 0} warning${lint.warnings === 1 ? "" : "s"}`
                )
              ),
              problems.length
                ? h("ul", { class: "problems", id: "cfg-problems" }, problems.map((p) => h("li", { class: "problem-" + p.severity }, KT.badge(p.severity === "error" ? "blocked" : "redacted", p.severity), " ", h("span", { class: "mono" }, p.message || `${p.path}: line ${p.line}`))))
                : null
            ),
            h(
              "section",
              { class: "card", "aria-labelledby": "chains-title" },
              h("h2", { id: "chains-title" }, "Chains per consumer group"),
              KT.table(
                { id: "cfg-chains" },
                ["Consumer group", "Policy chain"],
                chains.map(([name, chain]) => h("tr", null, h("th", { scope: "row" }, name), h("td", null, h("ol", { class: "chain" }, (chain || []).map((p) => h("li", null, p))))))
              )
            )
          ),
          h("details", { class: "card config-text", open: true }, h("summary", null, h("h2", { class: "inline" }, "Config text"), h("span", { class: "muted small" }, " (secrets masked)")), h("pre", { class: "content", id: "cfg-text" }, cfg.text || ""))
        );
      }

      (async () => {
        try {
          renderInfo(await KT.api("/v1/kt/config", { signal: controller.signal }));
        } catch (err) {
          if (err.name === "AbortError") return;
          KT.clear(info).append(h("p", { class: "muted" }, "The configuration is not available."));
          KT.banner.error(err, "Policy");
        }
      })();

      return {
        unmount() {
          controller.abort();
          if (running) running.abort();
        },
      };
    },
  };
})();
