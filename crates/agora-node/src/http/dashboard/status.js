// The Cluster, Durable mode and Stalwart bus panels, from /v1/node, /v1/cluster/nodes, /healthz and /metrics.
// Everything from the API is shown with textContent.

import { inHuman } from "./admin.js";

/** A heartbeat older than this is shown in red (a node is dropped after 3 missed heartbeats anyway). */
const STALE_MS = 5000;

function facts(dl, pairs) {
  const children = [];
  for (const [name, value, className] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    if (className) dd.className = className;
    children.push(dt, dd);
  }
  dl.replaceChildren(...children);
}

function tile(label, value, bad) {
  const span = document.createElement("span");
  span.className = bad ? "tile bad" : "tile";
  span.textContent = label;
  const b = document.createElement("b");
  b.textContent = String(value);
  span.append(b);
  return span;
}

export function linkText(link) {
  if (!link) return "?";
  return link.state === "closed" ? `closed: ${link.reason}` : link.state.replace("_", "-");
}

function linkClass(link) {
  if (!link) return "bad";
  if (link.state === "connected" || link.state === "single_node") return "good";
  return link.state === "reconnecting" ? "warn" : "bad";
}

/** Cluster panel: this node's facts, the problem counters, the members. */
export function showCluster(node, members) {
  const c = node.counters || {};
  document.getElementById("title-node").textContent = `node ${node.node_id}`;
  document.title = `agora node ${node.node_id}`;
  facts(document.getElementById("node-facts"), [
    ["this node", `${node.node_id} (${node.http}), agora ${node.version}, up ${inHuman(node.uptime_ms)}`],
    ["coordinator", node.coordinator],
    ["link", linkText(node.link), linkClass(node.link)],
    ["NATS server", node.server || "none", node.server ? "" : "muted"],
    ["state", node.ready ? "ready" : "waiting for the state transfer", node.ready ? "good" : "warn"],
    ["events", `${c.events_published ?? 0} published, ${c.events_received ?? 0} received`],
    ["replicated", `${node.blocked_ip_rules} blocked-IP rules, ${node.push_subscriptions} push subscriptions`],
  ]);

  const tiles = [];
  if (node.node_id_clash) {
    const clash = node.node_id_clash;
    tiles.push(tile(`node-id clash${clash.involves_us ? " (this node)" : ""}: id`, clash.node_id, true));
  }
  if (node.stalwart && node.stalwart.node_id_clash != null) {
    tiles.push(tile("Stalwart node-id clash: id", node.stalwart.node_id_clash, true));
  }
  // Which counters are problems, and their labels, come with the counters (/v1/node `problems`).
  for (const { counter, label } of node.problems || []) {
    const value = c[counter] ?? 0;
    tiles.push(tile(label, value, value > 0));
  }
  document.getElementById("problems").replaceChildren(...tiles);

  // The node's own row carries its clock: ages are computed against it, not against the browser's clock.
  const now = (members.find((m) => m.self) || {}).last_seen_ms ?? Date.now();
  const rows = members.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.node = String(m.node_id);
    const age = Math.max(0, now - m.last_seen_ms);
    if (!m.self && age >= STALE_MS) tr.className = "stale";
    const up = m.self ? node.uptime_ms : m.started_at_ms ? now - m.started_at_ms : null;
    const cells = [
      m.self ? `${m.node_id} (this node)` : String(m.node_id),
      m.http || "",
      m.self ? "now" : `${(age / 1000).toFixed(1)}s ago`,
      up === null ? "" : inHuman(up),
      m.self ? linkText(node.link) : age < STALE_MS ? "heartbeating" : "late",
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    if (m.self) tr.lastChild.className = linkClass(node.link);
    return tr;
  });
  document.querySelector("#members tbody").replaceChildren(...rows);
}

/** The value of a single metric series, or undefined. */
function metric(series, name) {
  const s = series.find((x) => x.name === name);
  return s ? s.value : undefined;
}

/** Durable panel: the agora_durable_* counters, or "not configured". */
export function showDurable(series) {
  const durable = series.filter((s) => s.name.startsWith("agora_durable_"));
  const dl = document.getElementById("durable-facts");
  if (durable.length === 0) {
    facts(dl, [["JetStream", "not configured: events are delivered live only", "muted"]]);
    return;
  }
  const lost = new Set(["agora_durable_expired_total"]);
  facts(dl, [
    ["JetStream", "on: a node that was away catches up", "good"],
    ...durable.map((s) => [
      s.name.replace(/^agora_durable_/, "").replace(/_total$/, "").replaceAll("_", " "),
      String(s.value),
      lost.has(s.name) && s.value > 0 ? "bad" : "",
    ]),
  ]);
}

/** Stalwart panel: configuration and senders from /v1/node, counters from /metrics. */
export function showStalwart(stalwart, series, now) {
  const dl = document.getElementById("stalwart-facts");
  if (!stalwart) {
    facts(dl, [["Stalwart bus", "not configured", "muted"]]);
    return;
  }
  const counters = stalwart.counters || {};
  const kinds = series
    .filter((s) => s.name === "agora_stalwart_events_received_total" && s.value > 0)
    .map((s) => `${s.labels.kind} ${s.value}`);
  const failures = metric(series, "agora_stalwart_forward_failures_total") ?? 0;
  const nodes = (stalwart.nodes || [])
    .map((n) => `${n.node_id} (${n.events} events, ${inHuman(now - n.last_seen_ms)} ago)`)
    .join(", ");
  facts(dl, [
    ["release", `Stalwart ${stalwart.version}, subject ${stalwart.subject}`],
    ["agora's id there", String(stalwart.node_id)],
    ["clash", stalwart.node_id_clash == null ? "none" : `id ${stalwart.node_id_clash} used by another sender`,
      stalwart.node_id_clash == null ? "good" : "bad"],
    ["forwards", (stalwart.forward || []).join(", ") || "nothing"],
    ["Stalwart nodes heard", nodes || "none in the last 5 minutes", nodes ? "" : "muted"],
    ["received", `${counters.batches_received ?? 0} batches; ${kinds.join(", ") || "no events"}`],
    ["invalid batches", String(counters.invalid_batches ?? 0), counters.invalid_batches > 0 ? "bad" : ""],
    ["forwarded", `${counters.events_forwarded ?? 0} events`],
    ["refused", String(counters.events_refused ?? 0), counters.events_refused > 0 ? "bad" : ""],
    ["forward failures", String(failures), failures > 0 ? "bad" : ""],
    ["copies skipped", String(counters.forwarded_copies_skipped ?? 0)],
  ]);
}

/** The banners: red for an unreachable or disconnected node, amber for starting and for health warnings. */
export function showHealth({ unreachable, health }) {
  const banner = document.getElementById("banner");
  const warnings = document.getElementById("warnings");
  const pill = document.getElementById("status-pill");
  let text = null;
  let warn = false;
  let pillText;
  let pillClass;
  if (unreachable) {
    text = unreachable;
    pillText = "unreachable";
    pillClass = "bad";
  } else if (health.status === "ok") {
    pillText = "healthy";
    pillClass = "ok";
  } else if (health.status === "starting") {
    text = "Starting: waiting for the state transfer from a peer (blocked IPs and push subscriptions).";
    warn = true;
    pillText = "starting";
    pillClass = "warn";
  } else {
    const reason = health.reason || `link ${health.link || "down"}`;
    text = `Node disconnected from NATS: ${reason}. Events are neither sent nor received.`;
    pillText = health.status || "unhealthy";
    pillClass = "bad";
  }
  banner.hidden = text === null;
  banner.textContent = text || "";
  banner.className = warn ? "banner warn" : "banner";
  pill.textContent = pillText;
  pill.className = `pill ${pillClass}`;
  const list = (!unreachable && health && health.warnings) || [];
  warnings.hidden = list.length === 0;
  warnings.textContent = list.join(" · ");
}
