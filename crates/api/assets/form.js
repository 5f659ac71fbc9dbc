// The create / edit form. Field errors come from the API's JSON errors (`error.field`, e.g.
// `webhook.rate_limit`) and are shown next to that field.
import { api, describe } from "./api.js";
import { h, mount, toast } from "./dom.js";

const FIELDS = ["url", "description", "filter_types", "secret", "rate_limit", "ordering"];

const ORDERINGS = [
  ["parallel", "Parallel", "Several deliveries at once; a failing event never holds back the next. Fastest."],
  ["fifo", "In order (FIFO)", "One delivery at a time, in the order events happened. A failing event holds the later ones back until it succeeds or finally fails."],
];

export async function renderForm(ctx, id) {
  const alive = ctx.current();
  const editing = id !== null;
  mount(ctx.root, h("p", { class: "muted" }, "Loading…"));
  let types;
  let current = null;
  try {
    [types, current] = await Promise.all([
      ctx.eventTypes(),
      editing ? api.getWebhook(id).then((r) => r.webhook) : Promise.resolve(null),
    ]);
  } catch (err) {
    if (alive()) ctx.failed(err, () => renderForm(ctx, id));
    return;
  }
  if (!alive()) return;

  const errors = {};
  const errorSlot = (name) => {
    errors[name] = h("p", { class: "field-error", id: `${name}-error`, hidden: true });
    return errors[name];
  };
  const formError = h("div", { class: "notice notice-error", role: "alert", id: "form-error", hidden: true });

  const url = h("input", {
    id: "url", name: "url", type: "url", class: "input", required: true, inputmode: "url",
    placeholder: "https://example.com/hooks", value: current ? current.url : "", autocomplete: "off",
  });
  const description = h("input", {
    id: "description", name: "description", type: "text", class: "input", maxlength: "1024",
    placeholder: "Webhook for CRM sync", value: current ? current.description : "",
  });
  const selected = current && current.filter_types ? new Set(current.filter_types) : null;
  const boxes = types.map((t) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "filter_types", value: t.name, checked: !selected || selected.has(t.name) }),
    h("span", { class: "check-text" }, h("code", {}, t.name), h("span", { class: "muted small" }, t.description))));
  const secret = editing ? null : h("input", {
    id: "secret", name: "secret", type: "text", class: "input mono", autocomplete: "off", spellcheck: "false",
    placeholder: "Leave empty to generate one (whsec_…)",
  });
  const rate = h("input", {
    id: "rate_limit", name: "rate_limit", type: "text", inputmode: "numeric", class: "input input-narrow",
    value: current ? String(current.rate_limit) : "60",
  });
  const currentOrdering = current ? current.ordering : "parallel";
  const orderings = ORDERINGS.map(([value, label, help]) => h("label", { class: "check" },
    h("input", { type: "radio", name: "ordering", value, checked: value === currentOrdering }),
    h("span", { class: "check-text" }, h("span", {}, label), h("span", { class: "muted small" }, help))));
  const inputs = { url, description, secret, rate_limit: rate };

  const field = (name, label, control, help) => h("div", { class: "field" },
    h("label", { for: name, class: "label" }, label),
    control,
    help ? h("p", { class: "help", id: `${name}-help` }, help) : null,
    errorSlot(name));

  const submit = h("button", { type: "submit", class: "btn btn-primary" }, editing ? "Save changes" : "Create webhook");
  const back = editing ? `#/webhooks/${encodeURIComponent(id)}` : "#/";
  const form = h("form", { class: "card form", novalidate: true, id: "webhook-form" },
    formError,
    field("url", "Endpoint URL", url, "Where Buildr sends the POST requests. http or https."),
    field("description", "Description", description, "Optional. Helps you tell endpoints apart."),
    h("fieldset", { class: "field", id: "filter_types", "aria-describedby": "filter_types-error" },
      h("legend", { class: "label" }, "Event types"),
      h("div", { class: "check-actions" },
        h("button", { type: "button", class: "link", onclick: () => boxes.forEach((b) => { b.querySelector("input").checked = true; }) }, "Select all"),
        h("button", { type: "button", class: "link", onclick: () => boxes.forEach((b) => { b.querySelector("input").checked = false; }) }, "Clear")),
      h("div", { class: "checks" }, boxes),
      h("p", { class: "help" }, "All six checked subscribes to every event type."),
      errorSlot("filter_types")),
    secret ? field("secret", "Signing secret", secret,
      "Optional. A whsec_ secret (base64 after the prefix) or any 6–256 printable characters, verified in raw format.") : null,
    field("rate_limit", "Rate limit", h("div", { class: "with-suffix" }, rate, h("span", { class: "muted" }, "deliveries per minute")),
      "1 to 1,000,000. Extra messages wait their turn; none is dropped."),
    h("fieldset", { class: "field", id: "ordering", "aria-describedby": "ordering-error" },
      h("legend", { class: "label" }, "Delivery order"),
      h("div", { class: "checks" }, orderings),
      errorSlot("ordering")),
    h("div", { class: "form-actions" },
      h("a", { class: "btn btn-ghost", href: back }, "Cancel"),
      submit));

  const clearErrors = () => {
    formError.hidden = true;
    for (const name of FIELDS) {
      if (errors[name]) { errors[name].hidden = true; errors[name].textContent = ""; }
      const input = inputs[name];
      if (input) { input.removeAttribute("aria-invalid"); input.setAttribute("aria-describedby", `${name}-help`); }
    }
  };
  const showError = (name, message) => {
    const slot = errors[name];
    if (!slot) {
      formError.textContent = message;
      formError.hidden = false;
      formError.scrollIntoView({ block: "nearest" });
      return;
    }
    slot.textContent = message;
    slot.hidden = false;
    const input = inputs[name];
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", `${name}-error ${name}-help`);
      input.focus();
    } else {
      slot.scrollIntoView({ block: "nearest" });
    }
  };

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearErrors();
    const body = {};
    const u = url.value.trim();
    if (!u) return showError("url", "Enter the URL of your endpoint.");
    if (!current || u !== current.url) body.url = u;
    const d = description.value;
    if (!current || d !== current.description) body.description = d;
    const chosen = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    // Every type checked means "all types" (null); none checked is sent as-is so the API explains.
    const filter = chosen.length === types.length ? null : chosen;
    const was = current ? current.filter_types : undefined;
    if (!current || JSON.stringify(filter) !== JSON.stringify(was)) {
      if (filter !== null || current) body.filter_types = filter;
    }
    if (secret && secret.value.trim()) body.secret = secret.value.trim();
    const r = rate.value.trim();
    if (r !== "") {
      if (!/^-?\d+$/.test(r)) return showError("rate_limit", "Enter a whole number of deliveries per minute.");
      const n = Number(r);
      if (!current || n !== current.rate_limit) body.rate_limit = n;
    }
    const ordering = orderings.map((o) => o.querySelector("input")).find((i) => i.checked);
    if (ordering && ordering.value !== currentOrdering) body.ordering = ordering.value;
    submit.disabled = true;
    try {
      let saved;
      if (editing) {
        saved = Object.keys(body).length ? (await api.updateWebhook(id, body)).webhook : current;
      } else {
        saved = (await api.createWebhook(body)).webhook;
      }
      if (!alive()) return;
      toast(editing ? "Changes saved." : "Webhook created.");
      ctx.go(`#/webhooks/${encodeURIComponent(saved.id)}`);
    } catch (err) {
      if (!alive()) return;
      const name = err.field && err.field.startsWith("webhook.") ? err.field.slice("webhook.".length) : null;
      if (name && errors[name]) showError(name, sentence(err.message));
      else showError(null, describe(err));
    } finally {
      submit.disabled = false;
    }
  });

  mount(ctx.root,
    h("nav", { class: "crumbs" }, h("a", { href: back }, editing ? "← Back to webhook" : "← Webhooks")),
    h("div", { class: "page-head" }, h("div", {},
      h("h1", {}, editing ? "Edit webhook" : "Add webhook"),
      editing ? h("p", { class: "muted mono" }, current.id) : h("p", { class: "muted" }, "Buildr signs every message so your endpoint can check it came from us."))),
    form);
  url.focus();
}

/** "must be from 1 to 1000000" → "Must be from 1 to 1000000." */
function sentence(message) {
  const m = String(message || "Invalid value");
  const s = m.charAt(0).toUpperCase() + m.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}
