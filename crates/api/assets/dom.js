// DOM helpers. Everything the page shows is built with createElement and textContent: API data is
// never parsed as HTML.

/**
 * h("div", {class: "x", onclick: fn, dataset: {id: "1"}}, "text", child, [more, children])
 * Attributes named on* become listeners; `false`/`null`/`undefined` attributes and children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked" || k === "disabled" || k === "hidden" || k === "open") el[k] = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replaces an element's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** "3 minutes ago"-style text for an RFC 3339 time, with the exact time as a tooltip. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return h("span", {}, iso);
  return h("time", { datetime: iso, title: d.toLocaleString() }, relative(d));
}

function relative(d) {
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  const future = s < 0;
  const a = Math.abs(s);
  let text;
  if (a < 5) return future ? "in a moment" : "just now";
  if (a < 60) text = `${a} s`;
  else if (a < 3600) text = `${Math.floor(a / 60)} min`;
  else if (a < 86400) text = `${Math.floor(a / 3600)} h`;
  else return d.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
  return future ? `in ${text}` : `${text} ago`;
}

let toastTimer;
document.addEventListener("click", (e) => {
  if (e.target instanceof Element && e.target.id === "toast") e.target.hidden = true;
});
/** A short message at the bottom of the screen (kind: "ok" | "error"). */
export function toast(message, kind = "ok") {
  const t = $("#toast");
  t.textContent = message;
  t.className = `toast toast-${kind}`;
  t.hidden = false;
  t.title = "Click to dismiss";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, kind === "error" ? 8000 : 4000);
}

/** A modal confirmation; resolves true when the user confirms. */
export function confirmDialog({ title, text, ok = "Confirm", danger = true }) {
  const dlg = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  const okBtn = $("#confirm-ok");
  okBtn.textContent = ok;
  okBtn.className = danger ? "btn btn-danger" : "btn btn-primary";
  dlg.returnValue = "";
  return new Promise((resolve) => {
    dlg.addEventListener("close", () => resolve(dlg.returnValue === "ok"), { once: true });
    dlg.showModal();
    $("#confirm-cancel").focus();
  });
}

/** Copies text, telling the user whether it worked. */
export async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text);
    toast(`${what} copied to the clipboard.`);
  } catch {
    toast(`Could not copy: select the ${what.toLowerCase()} and copy it by hand.`, "error");
  }
}

/** A status pill. */
export function badge(text, kind) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

/** A button that shows it is busy while `action` runs, so a slow request can't be sent twice. */
export function actionButton(label, cls, action, attrs = {}) {
  const btn = h("button", { type: "button", class: cls, ...attrs }, label);
  btn.addEventListener("click", async () => {
    if (btn.disabled) return;
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    try { await action(btn); } finally {
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
    }
  });
  return btn;
}

/** A plain error box, with a retry button when the action can be retried. */
export function errorPanel(message, retry) {
  return h("div", { class: "notice notice-error", role: "alert" },
    h("p", {}, message),
    retry ? h("button", { type: "button", class: "btn btn-ghost btn-sm", onclick: retry }, "Try again") : null);
}

/** Enabled / Disabled (and why) for a webhook. */
export function statusBadge(w) {
  if (!w.disabled) return badge("Enabled", "ok");
  const why = { manual: "Disabled", gone: "Disabled: 410 Gone", failing: "Disabled: failing" }[w.disabled_reason] || "Disabled";
  return badge(why, w.disabled_reason === "manual" ? "muted" : "error");
}

/** `filter_types` in words (`null` is every type). */
export function typesText(filterTypes) {
  return filterTypes === null || filterTypes === undefined ? "All event types" : filterTypes.join(", ");
}
