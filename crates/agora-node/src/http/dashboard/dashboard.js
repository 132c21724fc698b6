// The dashboard's entry point: polls the node's API every few seconds, feeds the panels and the traffic charts,
// and shows clearly when the node is disconnected (healthz 503) or unreachable (fetch fails, retried with back-off).

import { Backoff, HttpError, getJson, getText } from "./api.js";
import { Admin } from "./admin.js";
import { Traffic, drawChart, parseMetrics } from "./charts.js";
import { showCluster, showDurable, showHealth, showStalwart } from "./status.js";
import { Tail } from "./tail.js";

const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;

const traffic = new Traffic(WINDOW_MS);
let wake = null;

/** Polls again now (after a write, so that the lists show it at once). */
function nudge() {
  if (wake) wake();
}

function pause(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}

function drawTraffic() {
  const now = Date.now();
  const windowMs = traffic.span(now);
  drawChart(document.getElementById("rate-chart"), document.getElementById("rate-legend"), traffic.rates(), {
    now,
    windowMs,
    unit: "/s",
    empty: "no events yet",
  });
  drawChart(document.getElementById("latency-chart"), document.getElementById("latency-legend"),
    traffic.latency(), { now, windowMs, unit: "ms", empty: "no remote events yet" });
}

async function pollOnce(admin) {
  // 503 is an answer here (disconnected or starting), shown as a banner; the rest still loads.
  const health = await getJson("/healthz", [503]);
  const [node, members, metricsText] = await Promise.all([
    getJson("/v1/node"),
    getJson("/v1/cluster/nodes"),
    getText("/metrics"),
  ]);
  const series = parseMetrics(metricsText);
  const nodeNow = (members.body.find((m) => m.self) || {}).last_seen_ms ?? Date.now();
  showHealth({ health: health.body || {} });
  showCluster(node.body, members.body);
  showDurable(series);
  showStalwart(node.body.stalwart, series, nodeNow);
  traffic.add(metricsText);
  drawTraffic();
  await admin.refresh(nodeNow);
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function main() {
  const admin = new Admin(nudge);
  const tail = new Tail();
  tail.run();
  window.addEventListener("resize", drawTraffic);
  const backoff = new Backoff();
  for (;;) {
    try {
      await pollOnce(admin);
      backoff.reset();
      await pause(POLL_MS);
    } catch (err) {
      const delay = backoff.take();
      const why = err instanceof HttpError ? `the API answered ${err.message}` : `no answer (${err.message || err})`;
      showHealth({ unreachable: `Node unreachable: ${why}. Retrying in ${Math.round(delay / 1000)}s.` });
      await pause(delay);
    }
  }
}

main();
