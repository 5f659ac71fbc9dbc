// The event types page: each of the six types with the JSON Schema of the body a receiver gets, an
// example body, and a "send a test event" to one of the account's webhooks.
import { api, describe } from "./api.js";
import { h, mount, toast, actionButton } from "./dom.js";

export async function renderEventTypes(ctx) {
  const alive = ctx.current();
  mount(ctx.root, h("p", { class: "muted" }, "Loading event types…"));
  let types;
  let webhooks;
  try {
    [types, webhooks] = await Promise.all([ctx.eventTypes(), api.listWebhooks().then((r) => r.webhooks)]);
  } catch (err) {
    if (alive()) ctx.failed(err, () => renderEventTypes(ctx));
    return;
  }
  if (!alive()) return;
  mount(ctx.root,
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "← Webhooks")),
    h("div", { class: "page-head" }, h("div", {},
      h("h1", {}, "Event types"),
      h("p", { class: "muted" }, "What Buildr sends: one JSON body per event, signed, with the same webhook-id on every attempt. Each body matches its schema below."))),
    h("div", { class: "types", id: "event-types" }, types.map((t) => typeCard(t, webhooks))));
}

function typeCard(t, webhooks) {
  const target = webhooks.length
    ? h("select", { class: "input", "aria-label": `Webhook to send a ${t.name} test event to`, dataset: { type: t.name } },
      webhooks.map((w) => h("option", { value: w.id }, w.description ? `${w.description} (${w.url})` : w.url)))
    : null;
  const send = target ? actionButton("Send a test event", "btn btn-primary btn-sm send-test", async () => {
    try {
      const r = await api.sendTest(target.value, t.name);
      toast(`Test ${t.name} event ${r.event.id} queued.`);
    } catch (err) {
      toast(describe(err), "error");
    }
  }, { dataset: { type: t.name } }) : null;
  return h("section", { class: "card type-card", id: `type-${t.name.replace(".", "-")}` },
    h("div", { class: "card-head" }, h("h2", {}, h("code", {}, t.name)), h("span", { class: "muted" }, t.description)),
    h("div", { class: "grid-2" },
      h("div", {}, h("h3", { class: "label" }, "Example body"), h("pre", { class: "code type-example" }, JSON.stringify(t.example, null, 2))),
      h("details", { class: "type-schema-wrap" }, h("summary", {}, "JSON Schema"),
        h("pre", { class: "code type-schema" }, JSON.stringify(t.schema, null, 2)))),
    target
      ? h("div", { class: "test-row" }, target, send)
      : h("p", { class: "muted small" }, "Add a webhook to send a test event."));
}
