/* ktproxy console — small SVG charts: time bars, time lines and horizontal bars.
 *
 * Each chart is a <figure> with a caption, an SVG (role="img" with a summary in
 * aria-label, a <title> per mark for hover) and a <details> holding the numbers as a
 * table, so the data is reachable without seeing the picture. Colours come from CSS
 * classes (theme variables), never from inline styles.
 */
"use strict";

(function () {
  const KT = window.KT;
  const h = KT.h;
  const s = KT.s;
  const HEIGHT = 220;
  const M = { top: 14, right: 16, bottom: 30, left: 56 };

  /** Round tick values covering 0..max (about `count` of them). */
  function niceTicks(max, count) {
    if (!(max > 0)) return [0, 1];
    const raw = max / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || 10 * mag;
    const ticks = [];
    for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(Number(v.toPrecision(12)));
    return ticks;
  }

  function fmtTick(v, unit) {
    let text;
    if (Math.abs(v) >= 1e6) text = (v / 1e6).toFixed(v % 1e6 ? 1 : 0) + "M";
    else if (Math.abs(v) >= 1e4) text = (v / 1e3).toFixed(v % 1e3 ? 1 : 0) + "k";
    else text = Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3)));
    return unit ? text + " " + unit : text;
  }

  function timeLabel(t, span) {
    const d = new Date(t * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    if (span > 2 * 86400) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    if (span > 86400) return `${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:00`;
    return span <= 1800 ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function frame(width, yMax, unit, yLabel) {
    const plotW = width - M.left - M.right;
    const plotH = HEIGHT - M.top - M.bottom;
    const ticks = niceTicks(yMax, 4);
    const top = ticks[ticks.length - 1] || 1;
    const y = (v) => M.top + plotH - (v / top) * plotH;
    const axis = s("g", { class: "axis axis-y" });
    for (const v of ticks) {
      axis.appendChild(s("line", { x1: String(M.left), x2: String(width - M.right), y1: String(y(v)), y2: String(y(v)), class: v === 0 ? "axis-line" : "grid-line" }));
      axis.appendChild(s("text", { x: String(M.left - 6), y: String(y(v) + 4), "text-anchor": "end", class: "tick" }, fmtTick(v, unit)));
    }
    if (yLabel) axis.appendChild(s("text", { x: "12", y: String(M.top + plotH / 2), transform: `rotate(-90 12 ${M.top + plotH / 2})`, "text-anchor": "middle", class: "axis-label" }, yLabel));
    return { plotW, plotH, y, axis };
  }

  function tickLabel(t, step, span) {
    const d = new Date(t * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    const day = `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
    const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    if (step >= 86400) return day;
    if (span > 86400) return d.getHours() === 0 && d.getMinutes() === 0 ? day : clock;
    return step < 60 ? `${clock}:${pad(d.getSeconds())}` : clock;
  }

  const STEPS = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];

  /** Ticks at round local times (every 5 min, 1 h, 1 day…), as many as fit. */
  function timeAxis(g, times, bucket, width) {
    if (!times.length) return;
    const t0 = times[0];
    const t1 = times[times.length - 1] + bucket;
    const plotW = width - M.left - M.right;
    const xt = (t) => M.left + ((t - t0) / (t1 - t0)) * plotW;
    const want = Math.max(2, Math.floor(plotW / 90));
    const step = STEPS.find((st) => (t1 - t0) / st <= want) || STEPS[STEPS.length - 1];
    const shift = new Date(t0 * 1000).getTimezoneOffset() * 60; // local midnight/hours
    for (let t = Math.ceil((t0 - shift) / step) * step + shift; t <= t1; t += step) {
      const cx = xt(t);
      g.appendChild(s("line", { x1: String(cx), x2: String(cx), y1: String(HEIGHT - M.bottom), y2: String(HEIGHT - M.bottom + 4), class: "axis-line" }));
      g.appendChild(s("text", { x: String(cx), y: String(HEIGHT - M.bottom + 17), "text-anchor": "middle", class: "tick" }, tickLabel(t, step, t1 - t0)));
    }
  }

  function legend(keys) {
    return h("div", { class: "legend" }, keys.map((k) => h("span", { class: "key " + k.cls }, k.label)));
  }

  function dataTable(caption, columns, rows) {
    return h(
      "details",
      { class: "chart-data" },
      h("summary", null, "Show the numbers"),
      KT.table(
        { class: "compact" },
        columns,
        rows.map((r) => h("tr", null, r.map((cell, i) => h(i ? "td" : "th", i ? { class: "num" } : { scope: "row" }, cell)))),
        caption
      )
    );
  }

  function figure(id, title, svg, extra) {
    return h("figure", { class: "chart", id }, h("figcaption", null, h("h2", { class: "chart-title" }, title)), svg, extra);
  }

  /**
   * Bars over time. The first key is the full bar; later keys are parts of it (errors,
   * blocked within requests), stacked over it from the baseline.
   */
  KT.charts = {};
  KT.charts.timeBars = function timeBars({ id, title, series, bucket, keys, unit, width, yLabel }) {
    const times = series.map((p) => p.t);
    const max = Math.max(0, ...series.map((p) => p[keys[0].field] || 0));
    const f = frame(width, max, unit, yLabel);
    const n = Math.max(series.length, 1);
    const slot = f.plotW / n;
    const barW = Math.max(1, slot * 0.78);
    const x = (i) => M.left + slot * i + slot / 2;
    const marks = s("g", { class: "marks" });
    series.forEach((p, i) => {
      const tip = `${timeLabel(p.t, 0)}: ${keys.map((kk) => `${KT.fmtNum(p[kk.field] || 0)} ${kk.label}`).join(", ")}`;
      let base = 0; // later keys stack from the baseline, inside the first (a part of it)
      keys.forEach((k, j) => {
        const v = p[k.field] || 0;
        if (!v) return;
        const lo = j === 0 ? 0 : base;
        const hi = j === 0 ? v : base + v;
        if (j > 0) base = hi;
        const top = f.y(hi);
        marks.appendChild(s("rect", { x: String(x(i) - barW / 2), y: String(top), width: String(barW), height: String(Math.max(0.5, f.y(lo) - top)), class: "bar " + k.cls }, s("title", null, tip)));
      });
    });
    const xAxis = s("g", { class: "axis axis-x" });
    timeAxis(xAxis, times, bucket, width);
    const total = series.reduce((a, p) => a + (p[keys[0].field] || 0), 0);
    const peak = series.reduce((best, p) => ((p[keys[0].field] || 0) > (best ? best[keys[0].field] || 0 : -1) ? p : best), null);
    const summary = `${title}: ${KT.fmtNum(total)} ${keys[0].label} in ${series.length} buckets of ${bucket} s` + (peak && max ? `, peak ${KT.fmtNum(max)} at ${timeLabel(peak.t, 0)}` : "") + ".";
    const svg = s("svg", { width: String(width), height: String(HEIGHT), viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": summary, class: "chart-svg" }, f.axis, marks, xAxis);
    const rows = series.map((p) => [KT.fmtTime(p.t), ...keys.map((k) => KT.fmtNum(p[k.field] || 0))]);
    return figure(id, title, svg, [legend(keys), dataTable(title, ["Bucket start", ...keys.map((k) => k.label)], rows)]);
  };

  /** Lines over time; null values break the line (no data in that bucket). */
  KT.charts.timeLines = function timeLines({ id, title, series, bucket, keys, unit, width, yLabel, format }) {
    const times = series.map((p) => p.t);
    const values = series.flatMap((p) => keys.map((k) => p[k.field])).filter((v) => v !== null && v !== undefined);
    const max = values.length ? Math.max(...values) : 0;
    const f = frame(width, max, unit, yLabel);
    const n = Math.max(series.length, 1);
    const slot = f.plotW / n;
    const x = (i) => M.left + slot * i + slot / 2;
    const fmt = format || ((v) => fmtTick(v, unit));
    const marks = s("g", { class: "marks" });
    for (const k of keys) {
      let d = "";
      let pen = false;
      series.forEach((p, i) => {
        const v = p[k.field];
        if (v === null || v === undefined) {
          pen = false;
          return;
        }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${f.y(v).toFixed(1)}`;
        pen = true;
      });
      if (d) marks.appendChild(s("path", { d, class: "line " + k.cls }));
      series.forEach((p, i) => {
        const v = p[k.field];
        if (v === null || v === undefined) return;
        const alone = (series[i - 1] || {})[k.field] == null && (series[i + 1] || {})[k.field] == null;
        const r = alone ? "3.5" : series.length > 60 ? "2" : "3";
        marks.appendChild(s("circle", { cx: String(x(i)), cy: String(f.y(v)), r, class: "dot " + k.cls }, s("title", null, `${timeLabel(p.t, 0)} ${k.label}: ${fmt(v)}`)));
      });
    }
    const xAxis = s("g", { class: "axis axis-x" });
    timeAxis(xAxis, times, bucket, width);
    const with_ = series.filter((p) => keys.some((k) => p[k.field] != null)).length;
    let summary;
    if (!values.length) summary = `${title}: no data in this range.`;
    else summary = `${title}: ` + keys.map((k) => {
      const vs = series.map((p) => p[k.field]).filter((v) => v != null);
      return `${k.label} from ${fmt(Math.min(...vs))} to ${fmt(Math.max(...vs))}`;
    }).join("; ") + `, over ${with_} of ${series.length} buckets.`;
    const svg = s("svg", { width: String(width), height: String(HEIGHT), viewBox: `0 0 ${width} ${HEIGHT}`, role: "img", "aria-label": summary, class: "chart-svg" }, f.axis, marks, xAxis);
    if (!values.length) svg.appendChild(s("text", { x: String(width / 2), y: String(HEIGHT / 2), "text-anchor": "middle", class: "empty-note" }, "No data in this range"));
    const rows = series.filter((p) => keys.some((k) => p[k.field] != null)).map((p) => [KT.fmtTime(p.t), ...keys.map((k) => (p[k.field] != null ? fmt(p[k.field]) : "—"))]);
    return figure(id, title, svg, [legend(keys), dataTable(title, ["Bucket start", ...keys.map((k) => k.label)], rows)]);
  };

  /** Horizontal bars for categories: `items` [{label, value, note}] sorted by the caller. */
  KT.charts.hBars = function hBars({ id, title, items, width, format, cls, emptyText }) {
    const fmt = format || KT.fmtNum;
    if (!items.length) return figure(id, title, h("p", { class: "muted empty-chart" }, emptyText || "No data in this range."));
    const rowH = 26;
    const labelW = Math.min(200, Math.max(90, Math.floor(width * 0.3)));
    const valueW = 110;
    const plotW = Math.max(60, width - labelW - valueW - 8);
    const height = items.length * rowH + 6;
    const max = Math.max(...items.map((i) => i.value), 0) || 1;
    const marks = s("g", { class: "marks" });
    items.forEach((item, i) => {
      const y = 3 + i * rowH;
      const w = Math.max(item.value > 0 ? 2 : 0, (item.value / max) * plotW);
      const fit = Math.max(6, Math.floor((labelW - 12) / 7)); // ~7 px per character at 12 px
      const label = item.label.length > fit ? item.label.slice(0, fit - 1) + "…" : item.label;
      marks.appendChild(s("text", { x: String(labelW - 8), y: String(y + rowH / 2 + 4), "text-anchor": "end", class: "bar-label" }, s("title", null, item.label), label));
      marks.appendChild(s("rect", { x: String(labelW), y: String(y + 4), width: String(w), height: String(rowH - 8), rx: "2", class: "bar " + (cls || "bar-primary") }, s("title", null, `${item.label}: ${fmt(item.value)}${item.note ? " (" + item.note + ")" : ""}`)));
      marks.appendChild(s("text", { x: String(labelW + w + 6), y: String(y + rowH / 2 + 4), class: "bar-value" }, fmt(item.value)));
    });
    const summary = `${title}: ` + items.slice(0, 5).map((i) => `${i.label} ${fmt(i.value)}`).join(", ") + (items.length > 5 ? `, and ${items.length - 5} more` : "") + ".";
    const svg = s("svg", { width: String(width), height: String(height), viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": summary, class: "chart-svg" }, marks);
    const rows = items.map((i) => [i.label, fmt(i.value), i.note || ""]);
    return figure(id, title, svg, dataTable(title, ["Name", "Value", "Note"], rows));
  };
})();
