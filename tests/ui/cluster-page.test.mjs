// The Developer page's cluster view, end to end: a real 3-server JetStream cluster (nats-server from
// `make nats-server`, `sync_interval: always`), two real `buildr-webhooks` nodes on it, and headless
// Debian Chromium (playwright-core): an admin sees both nodes with the shards the API says they hold.
// A single node shows an explanation instead. Every process started here is stopped by its PID.
//
//   cd tests/ui && npm ci && node --test cluster-page.test.mjs   (after `cargo build --bin buildr-webhooks`
//   and `make nats-server`; `make test` does all this)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const BIN = process.env.BUILDR_BIN || join(ROOT, "target/debug/buildr-webhooks");
const NATS = process.env.BUILDR_NATS_SERVER || join(ROOT, "target/nats-venv/bin/nats-server");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = join(ROOT, "target/ui-screenshots");
const ADMIN_TOKEN = "ui-cluster-admin-token-0123456789";

const children = []; // every process started, stopped by PID in after()
const dirs = [];
let browser;
let page;
const pageErrors = [];

async function freePort() {
  return new Promise((r, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => r(port));
    });
  });
}

async function waitFor(what, fn, timeoutMs = 30_000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    let v = null;
    try { v = await fn(); } catch { /* not up yet */ }
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Three nats-servers clustered on loopback ports; returns their client URLs once JetStream is healthy. */
async function startNats() {
  assert.ok(existsSync(NATS), `${NATS} is missing: run \`make nats-server\``);
  const dir = mkdtempSync(join(tmpdir(), "buildr-ui-nats-"));
  dirs.push(dir);
  const ports = [];
  for (let i = 0; i < 9; i++) ports.push(await freePort());
  const routes = ports.slice(0, 3).map((p) => `nats-route://127.0.0.1:${p}`).join(", ");
  const urls = [];
  const monitors = [];
  for (let i = 0; i < 3; i++) {
    const [client, monitor] = [ports[3 + 2 * i], ports[4 + 2 * i]];
    const conf = join(dir, `nats-${i}.conf`);
    writeFileSync(conf, `server_name: n${i}\nlisten: 127.0.0.1:${client}\nhttp: 127.0.0.1:${monitor}\n`
      + `jetstream { store_dir: "${join(dir, `store-${i}`)}", sync_interval: always, max_file_store: 256MB, max_memory_store: 32MB }\n`
      + `cluster { name: buildr-ui, listen: 127.0.0.1:${ports[i]}, routes: [${routes}] }\n`);
    children.push(spawn(NATS, ["-c", conf], { stdio: "ignore" }));
    urls.push(`nats://127.0.0.1:${client}`);
    monitors.push(monitor);
  }
  for (const m of monitors) {
    await waitFor(`nats-server on monitor port ${m}`, async () => (await fetch(`http://127.0.0.1:${m}/healthz`)).ok, 45_000);
  }
  return urls;
}

/** One `buildr-webhooks` (a cluster node when `cluster` gives its env); resolves to its base URL once ready. */
async function startNode(env = {}) {
  assert.ok(existsSync(BIN), `${BIN} is missing: run \`cargo build --bin buildr-webhooks\` first`);
  const dir = mkdtempSync(join(tmpdir(), "buildr-ui-node-"));
  dirs.push(dir);
  const child = spawn(BIN, ["serve", "--config", join(ROOT, "config/test.toml")], {
    env: { ...process.env, BUILDR_STORAGE__PATH: join(dir, "data"), BUILDR_SERVER__BIND: "127.0.0.1:0", BUILDR_ADMIN_TOKEN: ADMIN_TOKEN, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  const base = await new Promise((resolveStart, reject) => {
    const timer = setTimeout(() => reject(new Error("a node did not print its address within 60 s")), 60_000);
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/buildr-webhooks listening on (http:\/\/127\.0\.0\.1:\d+)/);
      if (m) { clearTimeout(timer); resolveStart(m[1]); }
    });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`a node exited early (${code}): ${out}`)); });
  });
  await waitFor("the node to be ready", async () => (await fetch(`${base}/readyz`)).ok, 60_000);
  return base;
}

async function clusterOf(base) {
  const res = await fetch(`${base}/api/2023-01/cluster`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  return { status: res.status, json: res.status === 200 ? await res.json() : null };
}

async function signIn(base) {
  await page.goto(`${base}/`);
  await page.locator("#token").fill(ADMIN_TOKEN);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#cluster-link").waitFor();
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
  page.on("pageerror", (e) => pageErrors.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    // A 404 from GET /cluster on a single node is expected; anything else at error level is a bug.
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(m.text());
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once("exit", r));
      process.kill(c.pid, "SIGKILL");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    }
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

test("a single node's cluster view explains there is no cluster", async () => {
  const base = await startNode();
  assert.equal((await clusterOf(base)).status, 404);
  await signIn(base);
  await page.locator("#cluster-link").click();
  await page.locator("#cluster-single").waitFor();
  assert.match(await page.locator("#cluster-single").textContent(), /runs on its own/);
  assert.equal(await page.locator("#cluster-nodes").count(), 0);
  await page.screenshot({ path: join(SHOTS, "21-cluster-single-node-desktop.png"), fullPage: true });
  assert.deepEqual(pageErrors, [], "the page logged errors");
});

test("an admin sees every node of a real cluster with the shards the API says it holds", async () => {
  const urls = (await startNats()).join(",");
  const node = (id) => startNode({
    BUILDR_CLUSTER__NATS: urls, BUILDR_CLUSTER__NODE_ID: id, BUILDR_CLUSTER__STREAM: "ui", BUILDR_CLUSTER__LEASE_TTL: "2s",
  });
  const [a, b] = [await node("node-a"), await node("node-b")];
  // Both nodes alive, all 64 shards held, 32 each (±1).
  const settled = await waitFor("the shards to settle", async () => {
    const c = await clusterOf(b);
    const nodes = c.json?.cluster.nodes ?? [];
    return nodes.length === 2 && nodes.reduce((t, n) => t + n.shards, 0) === 64
      && nodes.every((n) => Math.abs(n.shards - 32) <= 1) ? c.json.cluster : null;
  });
  assert.equal(settled.stream.name, "ui");

  await signIn(b);
  await page.locator("#cluster-link").click();
  await page.locator("#cluster-nodes").waitFor();
  assert.equal(await page.locator("#cluster-stream").textContent(), "ui");
  assert.equal(await page.locator("#cluster-node-count").textContent(), "2");
  assert.equal(await page.locator("#cluster-shards-total").textContent(), "64");
  // Row by row, what the API says (the view refreshes; shards are settled, so they stay put).
  const fromApi = (await clusterOf(b)).json.cluster;
  for (const n of fromApi.nodes) {
    const row = page.locator(`#cluster-nodes tr[data-node="${n.node_id}"]`);
    assert.equal(await row.locator(".node-shards").textContent(), String(n.shards));
  }
  assert.equal(await page.locator("#cluster-nodes tbody tr").count(), 2);
  assert.match(await page.locator('#cluster-nodes tr[data-node="node-b"]').textContent(), /answering/);
  assert.doesNotMatch(await page.locator('#cluster-nodes tr[data-node="node-a"]').textContent(), /answering/);
  await page.screenshot({ path: join(SHOTS, "22-cluster-two-nodes-desktop.png"), fullPage: true });

  // An account key does not get the link (the route needs the admin token).
  const acc = await fetch(`${a}/api/2023-01/accounts`, {
    method: "POST", headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ account: { name: "ui cluster" } }),
  });
  assert.equal(acc.status, 201);
  const key = (await acc.json()).api_key;
  assert.ok(key && key.startsWith("bk_"), JSON.stringify(key));
  // Written on node A; node B knows the key a moment later.
  await waitFor("the key on node B", async () => (await fetch(`${b}/api/2023-01/webhooks`, { headers: { Authorization: `Bearer ${key}` } })).ok);
  await page.locator("#sign-out").click();
  await page.locator("#token").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#event-types-link").waitFor();
  assert.equal(await page.locator("#cluster-link").count(), 0);
  assert.deepEqual(pageErrors, [], "the page logged errors");
});
