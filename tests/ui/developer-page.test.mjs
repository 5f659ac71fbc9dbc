// The Developer page, end to end: the real `buildr-webhooks` binary on a fresh data dir, a real
// receiver on 127.0.0.1 and headless Debian Chromium (playwright-core). Screenshots go to
// target/ui-screenshots/ (desktop and phone width).
//
//   cd tests/ui && npm ci && node --test   (after `cargo build --bin buildr-webhooks`; `make test` does all this)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { Webhook } from "svix";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.BUILDR_BIN || join(ROOT, "target/debug/buildr-webhooks");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = join(ROOT, "target/ui-screenshots");
const ADMIN_TOKEN = "ui-test-admin-token-0123456789";
const DESKTOP = { width: 1280, height: 860 };
const PHONE = { width: 375, height: 812 };

let server; // { child, base, dir }
let receiver; // { http, url, received: [] }
let browser;
let page;
const pageErrors = [];

// ---------- the server, the receiver and the browser ----------

function startServer() {
  assert.ok(existsSync(BIN), `${BIN} is missing: run \`cargo build --bin buildr-webhooks\` first`);
  const dir = mkdtempSync(join(tmpdir(), "buildr-ui-"));
  const child = spawn(BIN, ["serve", "--config", join(ROOT, "config/test.toml")], {
    env: {
      ...process.env,
      BUILDR_STORAGE__PATH: join(dir, "data"),
      BUILDR_SERVER__BIND: "127.0.0.1:0",
      BUILDR_ADMIN_TOKEN: ADMIN_TOKEN,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  return new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => reject(new Error("the server did not print its address within 30 s")), 30_000);
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/buildr-webhooks listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) { clearTimeout(timer); resolveStart({ child, base: m[1], dir }); }
    });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`the server exited early (${code}): ${out}`)); });
  });
}

async function waitReady(base) {
  for (let i = 0; i < 300; i++) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the server never became ready");
}

function startReceiver() {
  const received = [];
  const http = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      received.push({ path: req.url, headers: req.headers, body });
      // At /mixed, objects with an odd id fail (every attempt): the charts get real failures.
      let id = 0;
      try { id = JSON.parse(body).id; } catch { /* not JSON */ }
      const fail = req.url === "/mixed" && id % 2 === 1;
      res.writeHead(fail ? 500 : 200, { "Content-Type": "text/plain" });
      res.end(fail ? "failing on purpose" : "thanks from the ui-test receiver");
    });
  });
  return new Promise((r) => http.listen(0, "127.0.0.1", () => {
    r({ http, received, url: `http://127.0.0.1:${http.address().port}/hooks` });
  }));
}

async function apiCall(method, path, body) {
  const res = await fetch(`${server.base}/api/2023-01${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

/** A full-page screenshot (from the top, so the sticky header sits where a user sees it). */
async function shot(name, { fullPage = true } = {}) {
  if (fullPage) await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}

async function waitFor(what, fn, timeoutMs = 15_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  [server, receiver] = await Promise.all([startServer(), startReceiver()]);
  await waitReady(server.base);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Playwright gives every launch a fresh temporary profile (--user-data-dir). Without the
    // background-networking flags Chromium's own connections fail on a machine without internet.
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const context = await browser.newContext({ viewport: DESKTOP });
  page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // A fetch that answers 4xx is logged by Chromium as "Failed to load resource"; that is expected
    // here (wrong token, field errors). Anything else at error level, or a CSP report, is a bug.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text());
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  receiver?.http.close();
  if (server) {
    const exited = new Promise((r) => server.child.once("exit", r));
    server.child.kill("SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
    rmSync(server.dir, { recursive: true, force: true });
  }
});

// ---------- the scenario (one test: each step builds on the previous one) ----------

test("the Developer page manages a webhook end to end", async () => {
  // The page itself: served from the binary, with a CSP that allows only this origin.
  const res = await fetch(`${server.base}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/html/);
  assert.match(res.headers.get("content-security-policy"), /default-src 'self'/);

  // A wrong token: a clear message, nothing stored.
  await page.goto(`${server.base}/`);
  await page.locator("#token").fill("not-the-right-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  const signinError = page.locator("#signin-error");
  await signinError.waitFor({ state: "visible" });
  assert.match(await signinError.textContent(), /not accepted/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await shot("01-sign-in-wrong-token-desktop");

  // The admin token: the empty state.
  await page.locator("#token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#empty-webhooks").waitFor();
  assert.match(await page.locator("#empty-webhooks").textContent(), /No webhooks yet/);
  // The token lives in sessionStorage only.
  assert.equal(await page.evaluate(() => sessionStorage.getItem("buildr.token")), ADMIN_TOKEN);
  assert.equal(await page.evaluate(() => window.localStorage.length), 0);
  assert.deepEqual(await page.context().cookies(), []);
  await shot("02-empty-list-desktop");

  // The form: a bad rate limit first; the API's field error appears next to that field.
  await page.locator("#add-webhook").click();
  await page.locator("#webhook-form").waitFor();
  assert.equal(await page.locator('input[name="filter_types"]').count(), 6);
  await page.locator("#url").fill(receiver.url);
  await page.locator("#description").fill("Webhook for CRM sync");
  await page.getByRole("button", { name: "Clear" }).click();
  await page.locator('input[value="opportunity.create"]').check();
  await page.locator("#rate_limit").fill("0");
  await page.getByRole("button", { name: "Create webhook" }).click();
  const rateError = page.locator("#rate_limit-error");
  await rateError.waitFor({ state: "visible" });
  assert.match(await rateError.textContent(), /1 to 1000000/);
  assert.equal(await page.locator("#rate_limit").getAttribute("aria-invalid"), "true");
  assert.equal(await page.locator("#url-error").isVisible(), false);
  await shot("03-form-field-error-desktop");

  // Fixed: created, and the page shows it.
  await page.locator("#rate_limit").fill("100");
  await page.getByRole("button", { name: "Create webhook" }).click();
  await page.locator("#webhook-id").waitFor();
  const webhookId = (await page.locator("#webhook-id").textContent()).trim();
  assert.match(webhookId, /^wh_/);
  assert.equal((await page.locator("#webhook-url").textContent()).trim(), receiver.url);
  const stored = await apiCall("GET", `/webhooks/${webhookId}`);
  assert.equal(stored.json.webhook.rate_limit, 100);
  assert.deepEqual(stored.json.webhook.filter_types, ["opportunity.create"]);

  // Publish an event through the API; the delivery appears in the page by itself.
  const published = await apiCall("POST", "/events", {
    event: { type: "opportunity.create", data: { id: 2279, url: "https://app.buildr.example/opportunities/2279" } },
  });
  assert.equal(published.status, 202);
  const eventId = published.json.event.id;
  const row = page.locator(`.dl-row[data-event-id="${eventId}"]`);
  await row.and(page.locator('[data-status="succeeded"]')).waitFor({ timeout: 20_000 });

  // Its attempts: status code, the receiver's body, the duration.
  await row.locator(".dl-summary").click();
  const attempts = row.locator(".attempt");
  await attempts.first().waitFor();
  const attemptText = await attempts.first().textContent();
  assert.match(attemptText, /Attempt 1/);
  assert.match(attemptText, /HTTP 200/);
  assert.match(attemptText, /thanks from the ui-test receiver/);
  assert.match(attemptText, /\d+ ms/);

  // The secret: revealed into the snippet, and it verifies what the receiver got (svix, as the guide does).
  await page.locator("#reveal-secret").click();
  await waitFor("the revealed secret", async () => (await page.locator("#secret-value").textContent()).startsWith("whsec_"));
  const secret = (await page.locator("#secret-value").textContent()).trim();
  assert.equal(secret, (await apiCall("GET", `/webhooks/${webhookId}/secret`)).json.secret);
  const snippet = await page.locator("#verify-snippet").textContent();
  assert.ok(snippet.includes(`const secret = "${secret}";`), snippet);
  assert.ok(snippet.includes("new Webhook(secret);"), snippet);
  const delivered = receiver.received.find((r) => r.headers["webhook-id"] === eventId);
  assert.ok(delivered, "the receiver got the event");
  const msg = new Webhook(secret).verify(delivered.body, delivered.headers);
  assert.equal(msg.id, 2279);

  // Send a test event: accepted and delivered (or, on a server without the route, the error shown plainly).
  await page.locator("#send-test").click();
  const testResult = page.locator("#test-result > *");
  await testResult.first().waitFor();
  const testText = await testResult.first().textContent();
  assert.match(testText, /queued|Could not send a test event/);
  const testEvent = testText.match(/Test event (evt_\w+) queued/);
  if (testEvent) {
    await page.locator(`.dl-row[data-event-id="${testEvent[1]}"][data-status="succeeded"]`).waitFor({ timeout: 20_000 });
  }

  // Replay the failed ones since a day ago: none failed, and the page says so.
  await page.locator("#start-replay").click();
  await page.locator("#replay-status > *").first().waitFor();
  assert.match(await page.locator("#replay-status").textContent(), /Nothing to replay: no failed deliveries/);
  // Replay everything since then: the progress is polled until it is done.
  await page.locator("#replay-only-failed").uncheck();
  await page.locator("#start-replay").click();
  await page.locator("#replay-status", { hasText: "finished" }).waitFor({ timeout: 20_000 });
  assert.match(await page.locator("#replay-status").textContent(), /Replay rp_\w+ finished: \d+ events? sent again/);
  await shot("04-webhook-detail-desktop");

  // The status filter: no failed deliveries, said plainly; back to all.
  await page.locator("#delivery-status").selectOption("failed");
  await page.locator("#no-deliveries").waitFor();
  assert.match(await page.locator("#no-deliveries").textContent(), /No failed deliveries/);
  await page.locator("#delivery-status").selectOption("");
  await row.waitFor();

  // Edit: the description and the delivery order change, nothing else.
  await page.locator("#edit-webhook").click();
  await page.locator("#webhook-form").waitFor();
  assert.equal(await page.locator("#rate_limit").inputValue(), "100");
  assert.equal(await page.locator('input[name="ordering"][value="parallel"]').isChecked(), true);
  await page.locator("#description").fill("CRM sync (edited)");
  await page.locator('input[name="ordering"][value="fifo"]').check();
  await page.getByRole("button", { name: "Save changes" }).click();
  await page.locator("#webhook-id").waitFor();
  assert.match(await page.locator("#ordering-value").textContent(), /FIFO/);
  const edited = (await apiCall("GET", `/webhooks/${webhookId}`)).json.webhook;
  assert.equal(edited.description, "CRM sync (edited)");
  assert.equal(edited.ordering, "fifo");
  assert.deepEqual(edited.filter_types, ["opportunity.create"]);
  assert.equal(edited.rate_limit, 100);

  // Disable, then enable again.
  await page.locator("#toggle-disabled").click();
  await page.locator("#toggle-disabled", { hasText: "Enable" }).waitFor();
  assert.equal((await apiCall("GET", `/webhooks/${webhookId}`)).json.webhook.disabled_reason, "manual");
  await page.locator("#toggle-disabled").click();
  await page.locator("#toggle-disabled", { hasText: "Disable" }).waitFor();
  assert.equal((await apiCall("GET", `/webhooks/${webhookId}`)).json.webhook.disabled, false);

  // Rotate: confirm, and the page shows the new secret (the API agrees).
  await page.locator("#rotate-secret").click();
  await page.locator("#confirm").waitFor({ state: "visible" });
  await page.locator("#confirm-ok").click();
  await waitFor("the rotated secret", async () => {
    const s = (await page.locator("#secret-value").textContent()).trim();
    return s.startsWith("whsec_") && s !== secret;
  });
  const rotated = (await page.locator("#secret-value").textContent()).trim();
  assert.equal(rotated, (await apiCall("GET", `/webhooks/${webhookId}/secret`)).json.secret);
  assert.ok((await page.locator("#verify-snippet").textContent()).includes(rotated));

  // Phone width: the list and the detail stay readable (no sideways scrolling of the page).
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(200);
  await shot("05-webhook-detail-phone");
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
    "the detail page scrolls sideways at 375 px");
  await page.goto(`${server.base}/#/`);
  await page.locator("#webhook-list").waitFor();
  await shot("06-webhook-list-phone");
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
    "the list scrolls sideways at 375 px");
  await page.locator("#add-webhook").click();
  await page.locator("#webhook-form").waitFor();
  await shot("07-form-phone");
  await page.setViewportSize(DESKTOP);
  await page.locator(`a[href="#/"]`).first().click();
  await page.locator(`#webhook-list a[data-id="${webhookId}"]`).waitFor();
  await shot("08-webhook-list-desktop");
  await page.locator(`#webhook-list a[data-id="${webhookId}"]`).click();
  await page.locator("#webhook-id").waitFor();

  // Delete, after a confirm (cancel first: nothing happens).
  await page.locator("#delete-webhook").click();
  await page.locator("#confirm").waitFor({ state: "visible" });
  await shot("09-delete-confirm-desktop", { fullPage: false });
  await page.locator("#confirm-cancel").click();
  assert.equal((await apiCall("GET", `/webhooks/${webhookId}`)).status, 200);
  await page.locator("#delete-webhook").click();
  await page.locator("#confirm-ok").click();
  await page.locator("#empty-webhooks").waitFor();
  assert.equal((await apiCall("GET", `/webhooks/${webhookId}`)).status, 404);

  // Sign out: the token leaves sessionStorage and the sign-in form is back.
  await page.locator("#sign-out").click();
  await page.locator("#token").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);

  // A raw (non-whsec_) secret: the snippet verifies it in raw format.
  const raw = await apiCall("POST", "/webhooks", { webhook: { url: receiver.url, secret: "my-raw-secret-123" } });
  assert.equal(raw.status, 201);
  await page.locator("#token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator(`#webhook-list a[data-id="${raw.json.webhook.id}"]`).click();
  await page.locator("#reveal-secret").click();
  await page.locator("#verify-snippet", { hasText: "my-raw-secret-123" }).waitFor();
  assert.ok((await page.locator("#verify-snippet").textContent()).includes('new Webhook(secret, {format: "raw"});'));

  // A token that stops working mid-session (revoked, or edited): back to sign-in, with a message.
  await page.evaluate(() => sessionStorage.setItem("buildr.token", "revoked-token"));
  await page.reload();
  await page.locator("#signin-error").waitFor({ state: "visible" });
  assert.match(await page.locator("#signin-error").textContent(), /no longer accepted/);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.setViewportSize(PHONE);
  await shot("10-sign-in-phone");

  assert.deepEqual(pageErrors, [], "the page logged errors");
});

test("the charts show real numbers after real deliveries, and the event types page sends a test event", async () => {
  // A webhook whose receiver fails every attempt for odd object ids: 4 events, 2 of them failing 4 times.
  const mixed = receiver.url.replace(/\/hooks$/, "/mixed");
  const created = await apiCall("POST", "/webhooks", { webhook: { url: mixed, description: "Mixed results", rate_limit: 6000 } });
  assert.equal(created.status, 201);
  const id = created.json.webhook.id;
  for (const n of [1, 2, 3, 4]) {
    const r = await apiCall("POST", "/events", { event: { type: "opportunity.create", data: { id: n, url: `https://app.buildr.example/opportunities/${n}` } } });
    assert.equal(r.status, 202);
  }
  const sum = (buckets) => buckets.reduce((t, b) => [t[0] + b.attempts, t[1] + b.succeeded, t[2] + b.failed], [0, 0, 0]);
  await waitFor("all attempts recorded", async () => {
    const s = (await apiCall("GET", `/webhooks/${id}/stats`)).json.stats;
    return JSON.stringify(sum(s.buckets)) === JSON.stringify([10, 2, 8]);
  }, 20_000);

  await page.setViewportSize(DESKTOP);
  await page.goto(`${server.base}/`);
  if (await page.locator("#token").isVisible()) {
    await page.locator("#token").fill(ADMIN_TOKEN);
    await page.getByRole("button", { name: "Sign in" }).click();
  }
  // The list: a sparkline of the success rate over 24 h (2 of 10 attempts succeeded).
  const spark = page.locator(`.wh-spark[data-webhook="${id}"] svg`);
  await spark.waitFor();
  assert.equal(await spark.getAttribute("data-rate"), "20");
  assert.match(await spark.getAttribute("aria-label"), /20% of 10 attempts succeeded/);
  await shot("11-webhook-list-sparklines-desktop");

  // The detail: the chart of the last 24 h has the same numbers as the API, bucket by bucket.
  await page.locator(`#webhook-list a[data-id="${id}"]`).click();
  const summary = page.locator("#stats-summary[data-attempts]");
  await summary.waitFor();
  assert.deepEqual(
    [await summary.getAttribute("data-attempts"), await summary.getAttribute("data-succeeded"), await summary.getAttribute("data-failed")],
    ["10", "2", "8"]);
  const apiBuckets = (await apiCall("GET", `/webhooks/${id}/stats`)).json.stats.buckets;
  const bars = page.locator("#stats-chart .chart-bucket");
  assert.equal(await bars.count(), 24);
  const drawn = await bars.evaluateAll((els) => els.map((e) => [e.dataset.start, +e.dataset.attempts, +e.dataset.succeeded, +e.dataset.failed]));
  // Bucket by bucket (an hour may have begun between the page's request and ours: compare the common ones).
  const fromApi = new Map(apiBuckets.map((b) => [b.start, [b.start, b.attempts, b.succeeded, b.failed]]));
  const common = drawn.filter((d) => fromApi.has(d[0]));
  assert.ok(common.length >= 23, `${common.length} buckets in common`);
  for (const d of common) assert.deepEqual(d, fromApi.get(d[0]));
  assert.ok((await page.locator("#stats-chart .chart-fail").count()) >= 1, "failed attempts are drawn");
  assert.ok((await page.locator("#stats-chart .chart-ok").count()) >= 1, "succeeded attempts are drawn");
  // Hover shows the bucket's numbers.
  const busiest = drawn.reduce((best, d, i) => (d[1] > drawn[best][1] ? i : best), 0);
  await bars.nth(busiest).hover();
  await page.locator("#chart-readout", { hasText: `${drawn[busiest][1]} attempts` }).waitFor();
  assert.match(await page.locator("#chart-readout").textContent(), new RegExp(`${drawn[busiest][3]} failed, latency p50 \\d+ ms, p99 \\d+ ms`));
  await shot("12-stats-chart-desktop");

  // The last hour, in minutes: 60 bars, the same totals.
  await page.locator("#stats-1h").click();
  await waitFor("minute buckets", async () => (await page.locator("#stats-chart .chart-bucket").count()) === 60);
  assert.equal(await page.locator("#stats-summary").getAttribute("data-attempts"), "10");
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(200);
  await shot("13-stats-chart-phone");
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
    "the chart makes the page scroll sideways at 375 px");

  // Event types: all six with schema and example; a test event of one of them reaches the webhook.
  await page.setViewportSize(DESKTOP);
  await page.goto(`${server.base}/#/`);
  await page.locator("#event-types-link").click();
  const cards = page.locator(".type-card");
  await cards.first().waitFor();
  assert.equal(await cards.count(), 6);
  const card = page.locator("#type-contact-update");
  const example = JSON.parse(await card.locator(".type-example").textContent());
  assert.equal(example.type, "contact.update");
  const schema = JSON.parse(await card.locator(".type-schema").textContent());
  assert.equal(schema.properties.type.const, "contact.update");
  await card.locator("select").selectOption(id);
  const before = receiver.received.filter((r) => r.path === "/mixed").length;
  await card.locator(".send-test").click();
  await page.locator("#toast", { hasText: "Test contact.update event" }).waitFor();
  await waitFor("the test event at the receiver", async () => receiver.received
    .filter((r) => r.path === "/mixed").slice(before)
    .some((r) => JSON.parse(r.body).type === "contact.update"));
  await shot("14-event-types-desktop");
  await page.setViewportSize(PHONE);
  await page.waitForTimeout(200);
  await shot("15-event-types-phone");
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
    "the event types page scrolls sideways at 375 px");

  assert.deepEqual(pageErrors, [], "the page logged errors");
});
