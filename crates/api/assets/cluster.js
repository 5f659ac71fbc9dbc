// The cluster view (admin token only): the node that answered, every live node with the shards whose
// lease it holds and how far it is behind the stream, and the stream's name and last seq
// (GET /api/2023-01/cluster). On a single node the API answers 404: the page says what that means.
import { api, describe } from "./api.js";
import { h, mount } from "./dom.js";

/** How often the view asks again while it is on screen. */
const REFRESH_MS = 2000;

export async function renderCluster(ctx) {
  const alive = ctx.current();
  const body = h("div", { id: "cluster-body" }, h("p", { class: "muted" }, "Loading the cluster…"));
  mount(ctx.root,
    h("nav", { class: "crumbs" }, h("a", { href: "#/" }, "← Webhooks")),
    h("div", { class: "page-head" }, h("div", {},
      h("h1", {}, "Cluster"),
      h("p", { class: "muted" }, "The nodes sharing this service's log, the webhook shards each one delivers, and how far each is behind the log."))),
    body);
  let timer = null;
  const load = async () => {
    let view;
    try {
      view = clusterView(await api.cluster());
    } catch (err) {
      view = err.status === 404 ? singleNode() : h("div", { class: "notice notice-error", role: "alert", id: "cluster-error" }, describe(err));
    }
    if (!alive()) return;
    mount(body, view);
    timer = setTimeout(load, REFRESH_MS);
  };
  ctx.onLeave(() => clearTimeout(timer));
  await load();
}

function singleNode() {
  return h("div", { class: "card", id: "cluster-single" },
    h("h2", {}, "One node"),
    h("p", {}, "This server runs on its own, with its log on its local disk (the embedded default): there is no cluster to show."),
    h("p", { class: "muted" }, "To run several nodes that share one replicated log, set cluster.nats to the servers of a NATS JetStream cluster on every node (see the README's Cluster section)."));
}

function clusterView(r) {
  const c = r.cluster;
  const total = c.nodes.reduce((t, n) => t + n.shards, 0);
  const rows = c.nodes.map((n) => h("tr", { dataset: { node: n.node_id } },
    h("td", {}, h("code", {}, n.node_id), n.node_id === c.node_id ? h("span", { class: "chip node-self" }, "answering") : null),
    h("td", { class: "num node-shards" }, String(n.shards)),
    h("td", { class: "num node-lag" }, n.lag === 0 ? "caught up" : `${n.lag} behind`)));
  return h("div", { class: "cluster" },
    h("dl", { class: "cluster-facts card", id: "cluster-facts" },
      h("div", {}, h("dt", {}, "Stream"), h("dd", { id: "cluster-stream" }, h("code", {}, c.stream.name))),
      h("div", {}, h("dt", {}, "Last message"), h("dd", { id: "cluster-last-seq" }, String(c.stream.last_seq))),
      h("div", {}, h("dt", {}, "Live nodes"), h("dd", { id: "cluster-node-count" }, String(c.nodes.length))),
      h("div", {}, h("dt", {}, "Shards held"), h("dd", { id: "cluster-shards-total" }, String(total)))),
    h("div", { class: "card" },
      h("table", { class: "cluster-nodes", id: "cluster-nodes" },
        h("thead", {}, h("tr", {}, h("th", {}, "Node"), h("th", { class: "num" }, "Shards"), h("th", { class: "num" }, "Lag (messages)"))),
        h("tbody", {}, rows)),
      h("p", { class: "muted small" }, "As of the answering node's last lease round. A node that stops renewing its leases drops out, and its shards move to the others.")));
}
