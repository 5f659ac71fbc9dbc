// The public API (docs/API.md), called with the token the user typed and nothing else.
// The token lives in sessionStorage only: it is gone when the tab closes, and other tabs don't see it.

const BASE = "/api/2023-01";
const TOKEN_KEY = "buildr.token";
const ACCOUNT_KEY = "buildr.account";

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || null;
  }
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY) || ""; },
  get account() { return sessionStorage.getItem(ACCOUNT_KEY) || ""; },
  start(token, account) {
    sessionStorage.setItem(TOKEN_KEY, token);
    if (account) sessionStorage.setItem(ACCOUNT_KEY, account);
    else sessionStorage.removeItem(ACCOUNT_KEY);
  },
  end() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(ACCOUNT_KEY);
  },
};

/**
 * The highest log position any answer carried (`Buildr-Position`), sent back as `Buildr-Min-Position`: in a
 * cluster, whichever node answers next shows at least what this page already saw or wrote.
 */
let position = 0;

/** Called when the API answers 401 to the current token (set by the app). */
let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

/**
 * Calls the API. Resolves to the decoded JSON (or null for 204); rejects with an ApiError that
 * carries the API's `error.code`, `error.message` and `error.field`.
 */
export async function call(method, path, body, { token = session.token, account = session.account } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (account) headers["Buildr-Account"] = account;
  if (position > 0) headers["Buildr-Min-Position"] = String(position);
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(BASE + path, init);
  } catch {
    throw new ApiError(0, "network", "Could not reach the Buildr Webhooks server. Check that it is running and try again.");
  }
  const seen = Number(res.headers.get("Buildr-Position"));
  if (Number.isSafeInteger(seen) && seen > position) position = seen;
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (res.ok) return data;
  const e = (data && data.error) || {};
  const err = new ApiError(res.status, e.code || `http_${res.status}`,
    e.message || `The server answered ${res.status} ${res.statusText}.`, e.field);
  if (res.status === 401 && token === session.token) onUnauthorized(err);
  throw err;
}

const enc = encodeURIComponent;

export const api = {
  eventTypes: (opts) => call("GET", "/event-types", undefined, opts),
  listWebhooks: (cursor) => call("GET", `/webhooks?limit=50${cursor ? `&cursor=${enc(cursor)}` : ""}`),
  getWebhook: (id) => call("GET", `/webhooks/${enc(id)}`),
  createWebhook: (webhook) => call("POST", "/webhooks", { webhook }),
  updateWebhook: (id, webhook) => call("PATCH", `/webhooks/${enc(id)}`, { webhook }),
  deleteWebhook: (id) => call("DELETE", `/webhooks/${enc(id)}`),
  secret: (id) => call("GET", `/webhooks/${enc(id)}/secret`),
  rotateSecret: (id) => call("POST", `/webhooks/${enc(id)}/secret/rotate`),
  sendTest: (id, type) => call("POST", `/webhooks/${enc(id)}/test`, { type }),
  deliveries: (id, status, cursor) => {
    const q = new URLSearchParams({ limit: "25" });
    if (status) q.set("status", status);
    if (cursor) q.set("cursor", cursor);
    return call("GET", `/webhooks/${enc(id)}/deliveries?${q}`);
  },
  attempts: (id, eventId) => call("GET", `/webhooks/${enc(id)}/deliveries/${enc(eventId)}/attempts`),
  replay: (id, body) => call("POST", `/webhooks/${enc(id)}/replay`, body),
  replayStatus: (id, rp) => call("GET", `/webhooks/${enc(id)}/replays/${enc(rp)}`),
  stats: (id, bucket) => call("GET", `/webhooks/${enc(id)}/stats?bucket=${enc(bucket || "1h")}`),
  accountStats: (bucket) => call("GET", `/stats?bucket=${enc(bucket || "1h")}`),
  cluster: () => call("GET", "/cluster"),
};

/** The message to show for an error, in plain words. */
export function describe(err) {
  if (!(err instanceof ApiError)) return `Something went wrong: ${err && err.message ? err.message : err}`;
  if (err.status === 401) return "This token was not accepted. Check that you pasted the whole API key or admin token.";
  if (err.status === 403) return `Not allowed with this token: ${err.message}`;
  if (err.status === 0) return err.message;
  const msg = err.message.replace(/\.$/, "");
  if (err.field) return `${err.field}: ${msg}.`;
  return `${msg.charAt(0).toUpperCase()}${msg.slice(1)} (HTTP ${err.status}).`;
}
