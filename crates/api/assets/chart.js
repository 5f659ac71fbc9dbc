// Charts as inline SVG, built element by element (no library, no markup parsing): the attempts chart of a
// webhook (stacked succeeded/failed bars, p50/p99 latency lines, numbers on hover) and the success-rate
// sparkline of the webhook list. Both take the `buckets` of `GET …/stats`.
import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A round number at or above `v` for an axis top (1, 2, 5 × 10^n). */
function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function label(iso, bucket) {
  const d = new Date(iso);
  return bucket === "1m"
    ? d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

/** Sums of a series: attempts, succeeded, failed. */
export function totals(buckets) {
  return buckets.reduce((t, b) => ({
    attempts: t.attempts + b.attempts, succeeded: t.succeeded + b.succeeded, failed: t.failed + b.failed,
  }), { attempts: 0, succeeded: 0, failed: 0 });
}

/**
 * The attempts chart: one bar per bucket (succeeded below, failed on top) against the left axis, and
 * the p50/p99 latency as lines against the right axis. Hovering (or focusing) a bucket shows its
 * numbers in the readout below the chart.
 */
export function attemptsChart(stats) {
  const { buckets, bucket } = stats;
  const W = 720, H = 240, L = 44, R = 52, T = 12, B = 28;
  const iw = W - L - R, ih = H - T - B;
  const n = Math.max(buckets.length, 1);
  const step = iw / n;
  const barW = Math.max(1, step * 0.7);
  const maxCount = niceMax(Math.max(0, ...buckets.map((b) => b.attempts)));
  const maxLat = niceMax(Math.max(0, ...buckets.map((b) => b.latency_p99_ms || 0)));
  const y = (v) => T + ih - (v / maxCount) * ih;
  const yl = (v) => T + ih - (v / maxLat) * ih;
  const x = (i) => L + i * step + (step - barW) / 2;

  const readout = h("p", { class: "chart-readout muted small", id: "chart-readout", "aria-live": "polite" },
    "Point at a bar to see its numbers.");
  const show = (b) => {
    readout.textContent = `${label(b.start, bucket)}: ${b.attempts} attempts, ${b.succeeded} succeeded, ${b.failed} failed`
      + (b.latency_p50_ms === null ? "" : `, latency p50 ${b.latency_p50_ms} ms, p99 ${b.latency_p99_ms} ms`);
  };

  const grid = [0, 0.5, 1].map((f) => s("g", {},
    s("line", { x1: L, x2: W - R, y1: y(maxCount * f), y2: y(maxCount * f), class: "chart-grid" }),
    s("text", { x: L - 6, y: y(maxCount * f) + 4, "text-anchor": "end", class: "chart-axis" }, String(maxCount * f)),
    s("text", { x: W - R + 6, y: yl(maxLat * f) + 4, class: "chart-axis" }, `${maxLat * f} ms`)));

  const bars = buckets.map((b, i) => {
    const okH = (b.succeeded / maxCount) * ih;
    const failH = (b.failed / maxCount) * ih;
    const g = s("g", {
      class: "chart-bucket", tabindex: "0", "data-start": b.start, "data-attempts": b.attempts,
      "data-succeeded": b.succeeded, "data-failed": b.failed,
      onmouseenter: () => show(b), onfocus: () => show(b),
    },
    s("title", {}, `${label(b.start, bucket)}: ${b.attempts} attempts, ${b.succeeded} succeeded, ${b.failed} failed`),
    s("rect", { x: L + i * step, y: T, width: step, height: ih, class: "chart-hit" }),
    b.succeeded ? s("rect", { x: x(i), y: T + ih - okH, width: barW, height: okH, class: "chart-ok" }) : null,
    b.failed ? s("rect", { x: x(i), y: T + ih - okH - failH, width: barW, height: failH, class: "chart-fail" }) : null);
    return g;
  });

  const line = (key, cls) => {
    const pts = buckets.map((b, i) => (b[key] === null ? null : `${(x(i) + barW / 2).toFixed(1)},${yl(b[key]).toFixed(1)}`));
    // Empty buckets break the line; a lone point is drawn as a dot.
    const runs = [];
    let run = [];
    for (const p of pts) {
      if (p === null) { if (run.length) runs.push(run); run = []; } else run.push(p);
    }
    if (run.length) runs.push(run);
    return runs.map((r) => (r.length === 1
      ? s("circle", { cx: r[0].split(",")[0], cy: r[0].split(",")[1], r: 2.5, class: `${cls} chart-dot` })
      : s("polyline", { points: r.join(" "), class: cls })));
  };

  const every = Math.ceil(n / 6);
  const ticks = buckets.map((b, i) => (i % every === 0
    ? s("text", { x: L + i * step + step / 2, y: H - 8, "text-anchor": "middle", class: "chart-axis" }, label(b.start, bucket))
    : null));

  const t = totals(buckets);
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", id: "stats-chart",
    "aria-label": `Attempts per ${bucket === "1m" ? "minute" : "hour"}: ${t.attempts} in all, ${t.succeeded} succeeded, ${t.failed} failed`,
  }, grid, bars, line("latency_p50_ms", "chart-p50"), line("latency_p99_ms", "chart-p99"), ticks);

  const legend = h("p", { class: "chart-legend small" },
    h("span", { class: "key key-ok" }, "Succeeded"), h("span", { class: "key key-fail" }, "Failed"),
    h("span", { class: "key key-p50" }, "Latency p50"), h("span", { class: "key key-p99" }, "Latency p99"));
  return h("div", { class: "chart-wrap" }, svg, legend, readout);
}

/** A sparkline of the success rate per bucket (gaps where nothing was attempted). */
export function sparkline(buckets) {
  const W = 96, H = 24;
  const n = Math.max(buckets.length - 1, 1);
  const pts = buckets.map((b, i) => (b.attempts
    ? `${((i / n) * W).toFixed(1)},${(H - 2 - (b.succeeded / b.attempts) * (H - 4)).toFixed(1)}` : null));
  const t = totals(buckets);
  const rate = t.attempts ? Math.round((t.succeeded / t.attempts) * 100) : null;
  const text = rate === null ? "No attempts in 24 h" : `${rate}% of ${t.attempts} attempts succeeded in 24 h`;
  const runs = [];
  let run = [];
  for (const p of pts) {
    if (p === null) { if (run.length) runs.push(run); run = []; } else run.push(p);
  }
  if (run.length) runs.push(run);
  const cls = rate === null ? "spark-none" : rate >= 99 ? "spark-ok" : rate >= 80 ? "spark-warn" : "spark-bad";
  return s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: `spark ${cls}`, role: "img", "aria-label": text, "data-rate": rate === null ? "" : rate },
    s("title", {}, text),
    s("line", { x1: 0, x2: W, y1: H - 2, y2: H - 2, class: "spark-base" }),
    runs.map((r) => (r.length === 1
      ? s("circle", { cx: r[0].split(",")[0], cy: r[0].split(",")[1], r: 3 })
      : s("polyline", { points: r.join(" ") }))));
}
