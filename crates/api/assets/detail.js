// One webhook: its settings, actions, signing secret (reveal, rotate, verify snippet), test event,
// deliveries and replay.
import { api, describe } from "./api.js";
import { h, mount, time, toast, confirmDialog, copy, actionButton, errorPanel, statusBadge, typesText } from "./dom.js";
import { deliveriesCard } from "./deliveries.js";
import { attemptsChart, totals } from "./chart.js";

export async function renderDetail(ctx, id) {
  const alive = ctx.current();
  mount(ctx.root, h("p", { class: "muted" }, "Loading webhook…"));
  let w;
  let types;
  try {
    [w, types] = await Promise.all([api.getWebhook(id).then((r) => r.webhook), ctx.eventTypes()]);
  } catch (err) {
    if (!alive()) return;
    if (err.status === 404) {
      mount(ctx.root, h("div", { class: "empty" },
        h("h2", {}, "Webhook not found"),
        h("p", { class: "muted" }, "It may have been deleted, or it belongs to another account."),
        h("a", { class: "btn btn-primary", href: "#/" }, "Back to webhooks")));
    } else {
      ctx.failed(err, () => renderDetail(ctx, id));
    }
    return;
  }
  if (!alive()) return;

  const deliveries = deliveriesCard(ctx, w.id);
  const secret = secretCard(w);
  mount(ctx.root,
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "← Webhooks")),
    header(ctx, w),
    statsCard(ctx, w),
    h("div", { class: "grid-2" }, secret.card, testCard(w, types, deliveries)),
    deliveries.el,
    replayCard(ctx, w, deliveries),
    secret.snippet);
}

/** Attempts over the last 24 hours (hour buckets) or the last hour (minute buckets), refreshed while shown. */
function statsCard(ctx, w) {
  const alive = ctx.current();
  let bucket = "1h";
  const body = h("div", { id: "stats-body" }, h("p", { class: "muted" }, "Loading…"));
  const summary = h("p", { class: "stats-summary", id: "stats-summary" });
  const choose = (b) => () => { bucket = b; day.setAttribute("aria-pressed", String(b === "1h")); hour.setAttribute("aria-pressed", String(b === "1m")); load(); };
  const day = h("button", { type: "button", class: "btn btn-ghost btn-sm", id: "stats-24h", "aria-pressed": "true", onclick: choose("1h") }, "Last 24 h");
  const hour = h("button", { type: "button", class: "btn btn-ghost btn-sm", id: "stats-1h", "aria-pressed": "false", onclick: choose("1m") }, "Last hour");
  async function load() {
    try {
      const stats = (await api.stats(w.id, bucket)).stats;
      if (!alive()) return;
      const t = totals(stats.buckets);
      const rate = t.attempts ? `${Math.round((t.succeeded / t.attempts) * 100)}% succeeded` : "no attempts yet";
      summary.dataset.attempts = t.attempts;
      summary.dataset.succeeded = t.succeeded;
      summary.dataset.failed = t.failed;
      summary.textContent = `${t.attempts} attempts · ${t.succeeded} succeeded · ${t.failed} failed · ${rate}`;
      mount(body, attemptsChart(stats));
    } catch (err) {
      if (alive()) mount(body, h("p", { class: "notice notice-error" }, describe(err)));
    }
  }
  load();
  const timer = setInterval(load, 15000);
  ctx.onLeave(() => clearInterval(timer));
  return h("section", { class: "card", id: "stats-card" },
    h("div", { class: "card-head" }, h("h2", {}, "Attempts"), h("div", { class: "card-tools" }, day, hour)),
    summary, body);
}

function header(ctx, w) {
  const toggle = actionButton(w.disabled ? "Enable" : "Disable", "btn btn-ghost", async () => {
    try {
      const updated = (await api.updateWebhook(w.id, { disabled: !w.disabled })).webhook;
      toast(updated.disabled ? "Webhook disabled: nothing is sent until you enable it." : "Webhook enabled: outstanding deliveries resume.");
      ctx.go(`#/webhooks/${encodeURIComponent(w.id)}`);
    } catch (err) {
      toast(describe(err), "error");
    }
  }, { id: "toggle-disabled" });
  const del = actionButton("Delete", "btn btn-danger-ghost", async () => {
    const ok = await confirmDialog({
      title: "Delete this webhook?",
      text: `Buildr stops sending to ${w.url} at once, and its delivery history goes with it. This cannot be undone.`,
      ok: "Delete webhook",
    });
    if (!ok) return;
    try {
      await api.deleteWebhook(w.id);
      toast("Webhook deleted.");
      ctx.go("#/");
    } catch (err) {
      toast(describe(err), "error");
    }
  }, { id: "delete-webhook" });
  return h("div", { class: "page-head detail-head" },
    h("div", { class: "detail-title" },
      h("div", { class: "detail-badges" }, statusBadge(w), h("span", { class: "chip" }, typesText(w.filter_types))),
      h("h1", { class: "wh-url-title", id: "webhook-url" }, w.url),
      h("p", { class: "muted" }, w.description || "No description"),
      h("dl", { class: "facts" },
        h("div", {}, h("dt", {}, "ID"), h("dd", { class: "mono", id: "webhook-id" }, w.id)),
        h("div", {}, h("dt", {}, "Rate limit"), h("dd", {}, `${w.rate_limit} per minute`)),
        h("div", {}, h("dt", {}, "Delivery order"), h("dd", { id: "ordering-value" }, w.ordering === "fifo" ? "In order (FIFO), one at a time" : "Parallel")),
        h("div", {}, h("dt", {}, "Created"), h("dd", {}, time(w.created_at))),
        h("div", {}, h("dt", {}, "Updated"), h("dd", {}, time(w.updated_at))))),
    h("div", { class: "actions" },
      h("a", { class: "btn btn-ghost", href: `#/webhooks/${encodeURIComponent(w.id)}/edit`, id: "edit-webhook" }, "Edit"),
      toggle, del));
}

const MASK = "••••••••••••••••••••••••";

/** The secret card and the verification snippet, which shows the secret once it is revealed. */
function secretCard(w) {
  let value = null;
  const shown = h("code", { class: "secret-value", id: "secret-value" }, MASK);
  const code = h("pre", { class: "code", id: "verify-snippet" });
  const hint = h("p", { class: "muted small", id: "snippet-hint" });
  const drawSnippet = () => {
    mount(code, snippet(value));
    hint.textContent = value
      ? "Filled in with this webhook's current secret. Keep it out of source control: load it from your secrets store."
      : "Reveal the secret above to fill it in.";
  };
  const reveal = actionButton("Reveal", "btn btn-ghost btn-sm", async (btn) => {
    if (value) { value = null; shown.textContent = MASK; btn.textContent = "Reveal"; copyBtn.hidden = true; drawSnippet(); return; }
    try {
      value = (await api.secret(w.id)).secret;
      shown.textContent = value;
      btn.textContent = "Hide";
      copyBtn.hidden = false;
      drawSnippet();
    } catch (err) {
      toast(describe(err), "error");
    }
  }, { id: "reveal-secret" });
  const copyBtn = h("button", { type: "button", class: "btn btn-ghost btn-sm", hidden: true, onclick: () => copy(value, "Secret") }, "Copy");
  const rotate = actionButton("Rotate", "btn btn-ghost btn-sm", async () => {
    const ok = await confirmDialog({
      title: "Rotate the signing secret?",
      text: "A new secret is generated. For the rotation overlap (24 hours by default) messages carry signatures from both the new and the previous secret, so you can update your endpoint without dropping any.",
      ok: "Rotate secret",
      danger: false,
    });
    if (!ok) return;
    try {
      value = (await api.rotateSecret(w.id)).secret;
      shown.textContent = value;
      reveal.textContent = "Hide";
      copyBtn.hidden = false;
      drawSnippet();
      toast("Secret rotated. The previous one keeps working during the overlap.");
    } catch (err) {
      toast(describe(err), "error");
    }
  }, { id: "rotate-secret" });
  drawSnippet();
  const card = h("section", { class: "card", "aria-labelledby": "secret-title" },
    h("h2", { id: "secret-title" }, "Signing secret"),
    h("p", { class: "muted small" }, "Every message carries webhook-signature (and svix-signature) headers made with this secret."),
    h("div", { class: "secret-row" }, shown),
    h("div", { class: "btn-row" }, reveal, copyBtn, rotate));
  const snippetCard = h("section", { class: "card", "aria-labelledby": "verify-title" },
    h("div", { class: "card-head" },
      h("h2", { id: "verify-title" }, "Verify signatures"),
      h("button", { type: "button", class: "btn btn-ghost btn-sm", onclick: () => copy(code.textContent, "Snippet") }, "Copy")),
    h("p", { class: "muted small" }, "Node.js (Express) with the svix library, as in the user guide. Verify the raw body, before parsing it."),
    code, hint);
  return { card, snippet: snippetCard };
}

/** The guide's Node example. A raw (non-whsec_) secret is verified with format "raw". */
function snippet(secret) {
  const s = secret === null ? "whsec_…" : secret;
  const raw = secret !== null && !secret.startsWith("whsec_");
  return `import { Webhook } from "svix";
import bodyParser from "body-parser";

const secret = ${JSON.stringify(s)};

app.post("/webhook", bodyParser.raw({type: "application/json"}), (req, res) => {
  const payload = req.body;
  const headers = req.headers;

  const wh = new Webhook(secret${raw ? ', {format: "raw"}' : ""});
  let msg;
  try {
    msg = wh.verify(payload, headers);
  } catch (err) {
    return res.status(400).json({});
  }

  // Do something with the message...

  res.json({});
});`;
}

function testCard(w, types, deliveries) {
  const choices = w.filter_types || types.map((t) => t.name);
  const select = h("select", { id: "test-type", class: "input", "aria-label": "Event type" },
    choices.map((t) => h("option", { value: t }, t)));
  const result = h("div", { id: "test-result", "aria-live": "polite" });
  const send = actionButton("Send test event", "btn btn-primary btn-sm", async () => {
    mount(result);
    try {
      const r = await api.sendTest(w.id, select.value);
      const evt = r && r.event ? r.event.id : "";
      mount(result, h("p", { class: "notice notice-ok small" }, `Test event ${evt} queued. It appears under Deliveries in a moment.`));
      deliveries.refresh();
    } catch (err) {
      mount(result, errorPanel(`Could not send a test event. ${describe(err)}`));
    }
  }, { id: "send-test" });
  return h("section", { class: "card", "aria-labelledby": "test-title" },
    h("h2", { id: "test-title" }, "Send a test event"),
    h("p", { class: "muted small" }, "An example event delivered to this webhook only, signed like the real ones."),
    h("div", { class: "btn-row" }, select, send),
    result);
}

function replayCard(ctx, w, deliveries) {
  const alive = ctx.current();
  const since = h("input", { id: "replay-since", type: "datetime-local", class: "input", value: localInput(new Date(Date.now() - 24 * 3600 * 1000)) });
  const onlyFailed = h("input", { id: "replay-only-failed", type: "checkbox", checked: true });
  const status = h("div", { id: "replay-status", "aria-live": "polite" });
  let timer = null;
  ctx.onLeave(() => clearTimeout(timer));

  const poll = async (rp) => {
    try {
      const r = (await api.replayStatus(w.id, rp.id)).replay;
      if (!alive()) return;
      const done = r.done >= r.events;
      mount(status, h("div", { class: "replay-progress" },
        h("progress", { max: String(Math.max(r.events, 1)), value: String(done ? Math.max(r.events, 1) : r.done) }),
        h("p", { class: "small" }, done
          ? `Replay ${r.id} finished: ${r.events} event${r.events === 1 ? "" : "s"} sent again.`
          : `Replay ${r.id}: ${r.done} of ${r.events} events sent…`)));
      if (done) deliveries.refresh();
      else timer = setTimeout(() => poll(rp), 1000);
    } catch (err) {
      if (alive()) mount(status, errorPanel(`Could not read the replay's progress. ${describe(err)}`));
    }
  };

  const start = actionButton("Start replay", "btn btn-primary btn-sm", async () => {
    clearTimeout(timer);
    mount(status);
    const d = new Date(since.value);
    if (!since.value || Number.isNaN(d.getTime())) {
      mount(status, errorPanel("Choose the time to replay from."));
      return;
    }
    try {
      const rp = (await api.replay(w.id, { since: d.toISOString(), only_failed: onlyFailed.checked })).replay;
      if (rp.events === 0) {
        mount(status, h("p", { class: "notice small" }, onlyFailed.checked
          ? "Nothing to replay: no failed deliveries since then."
          : "Nothing to replay: no matching events since then."));
        return;
      }
      poll(rp);
    } catch (err) {
      mount(status, errorPanel(`Could not start the replay. ${describe(err)}`));
    }
  }, { id: "start-replay" });

  return h("section", { class: "card", "aria-labelledby": "replay-title" },
    h("h2", { id: "replay-title" }, "Replay"),
    h("p", { class: "muted small" }, "Send events again, with their original ids, under this webhook's rate limit. Use it after fixing an endpoint that was down."),
    h("div", { class: "replay-form" },
      h("div", { class: "field" },
        h("label", { for: "replay-since", class: "label" }, "Since (your local time)"),
        since),
      h("label", { class: "check check-inline" }, onlyFailed, h("span", {}, "Only failed deliveries")),
      start),
    status);
}

/** A Date as the value of a datetime-local input (local time, minutes). */
function localInput(d) {
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}
