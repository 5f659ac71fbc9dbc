// The Developer page: sign-in, routing and the webhook list. Views live in form.js and detail.js.
import { api, session, describe, whenUnauthorized, call } from "./api.js";
import { h, mount, $, time, errorPanel, statusBadge, typesText } from "./dom.js";
import { renderForm } from "./form.js";
import { renderDetail } from "./detail.js";
import { renderEventTypes } from "./eventtypes.js";
import { renderCluster } from "./cluster.js";
import { sparkline } from "./chart.js";

const root = $("#app");

/** What the current view needs stopped (pollers) when the user leaves it. */
let cleanups = [];
/** Bumped on every navigation, so a slow answer for a view the user left is dropped. */
let generation = 0;
let eventTypes = null;

const ctx = {
  root,
  go(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  onLeave(fn) { cleanups.push(fn); },
  /** True while the view that asked is still the one on screen. */
  current() {
    const g = generation;
    return () => g === generation;
  },
  async eventTypes() {
    if (!eventTypes) eventTypes = (await api.eventTypes()).event_types;
    return eventTypes;
  },
  failed(err, retry) {
    mount(root, errorPanel(describe(err), retry));
  },
};

function signOut(message) {
  session.end();
  eventTypes = null;
  renderSignIn(message);
}

whenUnauthorized(() => signOut("Your token is no longer accepted. Sign in again."));

function route() {
  cleanups.forEach((fn) => fn());
  cleanups = [];
  generation += 1;
  window.scrollTo(0, 0);
  if (!session.token) return renderSignIn();
  showSession();
  const path = location.hash.replace(/^#/, "") || "/";
  let m;
  if (path === "/new") return renderForm(ctx, null);
  if (path === "/event-types") return renderEventTypes(ctx);
  if (path === "/cluster") return renderCluster(ctx);
  if ((m = path.match(/^\/webhooks\/([^/]+)\/edit$/))) return renderForm(ctx, decodeURIComponent(m[1]));
  if ((m = path.match(/^\/webhooks\/([^/]+)$/))) return renderDetail(ctx, decodeURIComponent(m[1]));
  return renderList();
}

function showSession() {
  $("#session").hidden = false;
  const t = session.token;
  const kind = t.startsWith("bk_") ? `API key ${t.slice(0, 11)}…` : "Admin token";
  $("#session-who").textContent = session.account ? `${kind} · ${session.account}` : kind;
}

function renderSignIn(message) {
  cleanups.forEach((fn) => fn());
  cleanups = [];
  generation += 1;
  $("#session").hidden = true;
  const error = h("div", { class: "notice notice-error", role: "alert", id: "signin-error", hidden: !message }, message || "");
  const token = h("input", {
    id: "token", name: "token", type: "password", class: "input", autocomplete: "off", spellcheck: "false",
    required: true, placeholder: "bk_… or your admin token", "aria-describedby": "token-help",
  });
  const account = h("input", {
    id: "account", name: "account", type: "text", class: "input", autocomplete: "off", spellcheck: "false",
    placeholder: "acc_default",
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Sign in");
  const form = h("form", { class: "card signin", novalidate: true },
    h("h1", { class: "signin-title" }, "Developer"),
    h("p", { class: "muted" }, "Manage the webhooks Buildr sends to your application: where they go, which events, how fast, and what happened to each delivery."),
    error,
    h("div", { class: "field" },
      h("label", { for: "token", class: "label" }, "API key or admin token"),
      token,
      h("p", { class: "help", id: "token-help" }, "Kept in this tab only (session storage) and sent only to this server's API.")),
    h("details", { class: "advanced" },
      h("summary", {}, "Admin: act on another account"),
      h("div", { class: "field" },
        h("label", { for: "account", class: "label" }, "Account id"),
        account,
        h("p", { class: "help" }, "With the admin token, the account to manage (the Buildr-Account header). Leave empty for acc_default."))),
    submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = token.value.trim();
    const acc = account.value.trim();
    if (!t) {
      error.textContent = "Enter an API key or the admin token.";
      error.hidden = false;
      token.focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      // Check the token before keeping it: a wrong one is told plainly, not stored.
      await call("GET", "/webhooks?limit=1", undefined, { token: t, account: acc });
      session.start(t, acc);
      eventTypes = null;
      if (location.hash && location.hash !== "#/") route();
      else ctx.go("#/");
    } catch (err) {
      error.textContent = describe(err);
      error.hidden = false;
      submit.disabled = false;
      submit.textContent = "Sign in";
      token.select();
    }
  });
  mount(root, h("div", { class: "signin-wrap" }, form));
  token.focus();
}

async function renderList() {
  const alive = ctx.current();
  mount(root, h("p", { class: "muted" }, "Loading webhooks…"));
  let webhooks = [];
  let next = null;
  try {
    const page = await api.listWebhooks();
    webhooks = page.webhooks;
    next = page.next_cursor;
  } catch (err) {
    if (alive()) ctx.failed(err, () => route());
    return;
  }
  if (!alive()) return;
  const list = h("ul", { class: "wh-list", id: "webhook-list" });
  const more = h("div", { class: "list-more" });
  const addRows = (rows) => rows.forEach((w) => list.appendChild(row(w, alive)));
  const showMore = () => {
    mount(more, next ? h("button", {
      type: "button", class: "btn btn-ghost", onclick: async (e) => {
        e.target.disabled = true;
        try {
          const page = await api.listWebhooks(next);
          next = page.next_cursor;
          addRows(page.webhooks);
        } catch (err) {
          mount(more, errorPanel(describe(err)));
          return;
        }
        showMore();
      },
    }, "Load more") : null);
  };
  addRows(webhooks);
  showMore();
  const add = h("a", { class: "btn btn-primary", href: "#/new", id: "add-webhook" }, "Add webhook");
  mount(root,
    h("div", { class: "page-head" },
      h("div", {},
        h("h1", {}, "Webhooks"),
        h("p", { class: "muted" }, "Buildr POSTs a signed message to each endpoint when a contact, opportunity or company is created or updated.")),
      h("div", { class: "actions" },
        h("a", { class: "btn btn-ghost", href: "#/event-types", id: "event-types-link" }, "Event types"),
        // The cluster view needs the admin token (an account key gets 403 there).
        session.token.startsWith("bk_") ? null : h("a", { class: "btn btn-ghost", href: "#/cluster", id: "cluster-link" }, "Cluster"),
        webhooks.length ? add : null)),
    webhooks.length
      ? [list, more]
      : h("div", { class: "empty", id: "empty-webhooks" },
        h("h2", {}, "No webhooks yet"),
        h("p", { class: "muted" }, "Add an endpoint to start receiving events from Buildr. You choose the event types, the rate and the signing secret."),
        add));
}

function row(w, alive) {
  // The success rate over 24 h, drawn when its numbers arrive (a failure leaves the row as it is).
  const spark = h("span", { class: "wh-spark", dataset: { webhook: w.id } });
  api.stats(w.id, "1h").then((r) => {
    if (!alive()) return;
    const svg = sparkline(r.stats.buckets);
    const rate = svg.getAttribute("data-rate");
    mount(spark, svg, h("span", { class: "small spark-rate" }, rate === "" ? "no attempts" : `${rate}% ok`));
  }).catch(() => {});
  return h("li", { class: "wh-row" },
    h("a", { class: "wh-link", href: `#/webhooks/${encodeURIComponent(w.id)}`, dataset: { id: w.id } },
      h("div", { class: "wh-main" },
        h("span", { class: "wh-url" }, w.url),
        h("span", { class: "wh-desc muted" }, w.description || "No description")),
      h("div", { class: "wh-meta" },
        statusBadge(w),
        spark,
        h("span", { class: "chip" }, typesText(w.filter_types)),
        w.ordering === "fifo" ? h("span", { class: "chip", title: "One delivery at a time, in order" }, "FIFO") : null,
        h("span", { class: "muted small" }, `${w.rate_limit}/min`),
        h("span", { class: "muted small" }, "Created ", time(w.created_at)))));
}

$("#sign-out").addEventListener("click", () => {
  signOut();
  history.replaceState(null, "", location.pathname);
});
window.addEventListener("hashchange", route);
route();
