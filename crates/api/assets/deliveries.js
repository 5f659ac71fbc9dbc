// Deliveries of one webhook (newest first, with a status filter) and, per delivery, its attempts.
// The list refreshes itself every few seconds while it is on screen.
import { api, describe } from "./api.js";
import { h, mount, time, badge, errorPanel } from "./dom.js";

const STATUSES = [
  ["", "All statuses"], ["pending", "Pending"], ["retrying", "Retrying"], ["succeeded", "Succeeded"], ["failed", "Failed"],
];
const KIND = { succeeded: "ok", failed: "error", retrying: "warn", pending: "muted" };
const REFRESH_MS = 3000;

export function statusPill(status) {
  return badge(status.charAt(0).toUpperCase() + status.slice(1), KIND[status] || "muted");
}

/** The Deliveries card. Returns { el, refresh }. */
export function deliveriesCard(ctx, webhookId) {
  const alive = ctx.current();
  let status = "";
  let rows = [];
  let next = null;
  let pages = 1;
  /** event id → attempts (array), "loading", or an Error; present = expanded. */
  const open = new Map();

  const list = h("div", { class: "dl-list", id: "deliveries" });
  const more = h("div", { class: "list-more" });
  const filter = h("select", { id: "delivery-status", class: "input input-narrow", "aria-label": "Filter by status" },
    STATUSES.map(([v, label]) => h("option", { value: v }, label)));
  filter.addEventListener("change", () => { status = filter.value; pages = 1; refresh(); });
  const refreshBtn = h("button", { type: "button", class: "btn btn-ghost btn-sm", onclick: () => refresh() }, "Refresh");

  async function refresh() {
    try {
      const page = await api.deliveries(webhookId, status);
      if (!alive()) return;
      rows = page.deliveries;
      next = page.next_cursor;
      pages = 1;
      await Promise.all([...open.keys()].map(loadAttempts));
      draw();
    } catch (err) {
      if (!alive()) return;
      drawn = "";
      mount(list, errorPanel(`Could not load deliveries. ${describe(err)}`, () => refresh()));
    }
  }

  async function loadMore() {
    try {
      const page = await api.deliveries(webhookId, status, next);
      rows = rows.concat(page.deliveries);
      next = page.next_cursor;
      pages += 1;
      draw();
    } catch (err) {
      drawn = "";
      mount(more, errorPanel(describe(err)));
    }
  }

  async function loadAttempts(eventId) {
    try {
      open.set(eventId, (await api.attempts(webhookId, eventId)).attempts);
    } catch (err) {
      open.set(eventId, err);
    }
  }

  async function toggle(eventId) {
    if (open.has(eventId)) { open.delete(eventId); draw(); return; }
    open.set(eventId, "loading");
    draw();
    await loadAttempts(eventId);
    if (alive()) draw();
  }

  /** What the list showed last: a refresh that changes nothing leaves the DOM (focus, selection) alone. */
  let drawn = "";

  function draw() {
    const snapshot = JSON.stringify([status, rows, next, [...open]]);
    if (snapshot === drawn) return;
    drawn = snapshot;
    if (!rows.length) {
      const empty = status
        ? `No ${status} deliveries.`
        : "No deliveries yet. When Buildr publishes an event this webhook subscribes to (or you send a test event), it shows up here.";
      mount(list, h("p", { class: "empty-inline muted", id: "no-deliveries" }, empty));
    } else {
      mount(list, rows.map(deliveryRow));
    }
    mount(more, next ? h("button", { type: "button", class: "btn btn-ghost", onclick: loadMore }, "Load older deliveries") : null);
  }

  function deliveryRow(d) {
    const expanded = open.has(d.event_id);
    const outcome = d.response_status !== null && d.response_status !== undefined
      ? h("span", { class: "mono" }, `HTTP ${d.response_status}`)
      : d.error ? h("span", { class: "text-error" }, d.error) : h("span", { class: "muted" }, "Not sent yet");
    const panelId = `attempts-${d.event_id}`;
    return h("div", { class: `dl-row${expanded ? " is-open" : ""}`, dataset: { eventId: d.event_id, status: d.status } },
      h("button", {
        type: "button", class: "dl-summary", "aria-expanded": String(expanded), "aria-controls": panelId,
        onclick: () => toggle(d.event_id),
      },
      h("span", { class: "dl-status" }, statusPill(d.status)),
      h("span", { class: "dl-event" }, h("code", {}, d.type), h("span", { class: "mono muted small" }, d.event_id)),
      h("span", { class: "dl-outcome" }, outcome, d.duration_ms !== null && d.duration_ms !== undefined ? h("span", { class: "muted small" }, ` · ${d.duration_ms} ms`) : null),
      h("span", { class: "dl-when muted small" },
        `${d.attempts} attempt${d.attempts === 1 ? "" : "s"} · `,
        d.last_attempt_at ? time(d.last_attempt_at) : "waiting",
        d.next_attempt_at ? [" · next ", time(d.next_attempt_at)] : null),
      h("span", { class: "dl-chevron", "aria-hidden": "true" }, expanded ? "▾" : "▸")),
      expanded ? h("div", { class: "dl-attempts", id: panelId }, attemptsView(open.get(d.event_id))) : null);
  }

  function attemptsView(a) {
    if (a === "loading") return h("p", { class: "muted" }, "Loading attempts…");
    if (a instanceof Error) return errorPanel(describe(a));
    if (!a || !a.length) return h("p", { class: "muted" }, "No attempts yet: the first one is waiting for its turn under the rate limit.");
    return h("ol", { class: "attempts" }, a.map((t) => h("li", { class: "attempt" },
      h("div", { class: "attempt-head" },
        h("strong", {}, `Attempt ${t.attempt}`),
        t.response_status !== null && t.response_status !== undefined
          ? badge(`HTTP ${t.response_status}`, t.response_status >= 200 && t.response_status < 300 ? "ok" : "error")
          : badge("No response", "error"),
        h("span", { class: "muted small" }, `${t.duration_ms} ms`),
        h("span", { class: "muted small" }, time(t.attempted_at))),
      t.error ? h("p", { class: "text-error small" }, t.error) : null,
      t.response_body
        ? h("pre", { class: "code code-sm attempt-body", "aria-label": "Response body (first 1 KiB)" }, t.response_body)
        : h("p", { class: "muted small" }, "Empty response body."))));
  }

  const timer = setInterval(() => {
    if (!document.hidden && pages === 1) refresh();
  }, REFRESH_MS);
  ctx.onLeave(() => clearInterval(timer));

  const el = h("section", { class: "card", "aria-labelledby": "deliveries-title" },
    h("div", { class: "card-head" },
      h("h2", { id: "deliveries-title" }, "Deliveries"),
      h("div", { class: "card-tools" }, filter, refreshBtn)),
    h("p", { class: "muted small" }, "Newest first. Open a delivery to see each attempt: status code, response body and duration."),
    list, more);
  mount(list, h("p", { class: "muted" }, "Loading deliveries…"));
  refresh();
  return { el, refresh };
}
