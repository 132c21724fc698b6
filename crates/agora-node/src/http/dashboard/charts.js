// Traffic from /metrics: the Prometheus text parsed here, rates and latency quantiles computed from successive
// samples, drawn on <canvas> (no chart library).

/** Parses Prometheus/OpenMetrics text into [{name, labels, value}]. */
export function parseMetrics(text) {
  const series = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    let name;
    let labels = {};
    let rest;
    const brace = line.indexOf("{");
    const space = line.indexOf(" ");
    if (brace >= 0 && (space < 0 || brace < space)) {
      name = line.slice(0, brace);
      const close = findClose(line, brace);
      if (close < 0) continue;
      labels = parseLabels(line.slice(brace + 1, close));
      rest = line.slice(close + 1).trim();
    } else {
      if (space < 0) continue;
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const value = Number(rest.split(/\s+/)[0]);
    if (!Number.isNaN(value)) series.push({ name, labels, value });
  }
  return series;
}

function findClose(line, from) {
  let quoted = false;
  for (let i = from + 1; i < line.length; i++) {
    const c = line[i];
    if (quoted && c === "\\") i++;
    else if (c === '"') quoted = !quoted;
    else if (c === "}" && !quoted) return i;
  }
  return -1;
}

function parseLabels(text) {
  const labels = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    labels[m[1]] = m[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
  }
  return labels;
}

/** One scrape reduced to what the charts need. */
function sampleOf(series, t) {
  const events = {};
  const buckets = [];
  for (const s of series) {
    if (s.name === "agora_events_published_total" || s.name === "agora_events_received_total") {
      events[s.labels.type] = (events[s.labels.type] || 0) + s.value;
    } else if (s.name === "agora_delivery_latency_seconds_bucket") {
      buckets.push({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), count: s.value });
    }
  }
  buckets.sort((a, b) => a.le - b.le);
  return { t, events, buckets };
}

/** The quantile q of the observations between two cumulative histograms, interpolated within a bucket. */
export function quantile(q, before, after) {
  if (!after.length || before.length !== after.length) return null;
  const counts = after.map((b, i) => b.count - before[i].count);
  const total = counts[counts.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < counts.length; i++) {
    if (counts[i] >= rank) {
      const lower = i === 0 ? 0 : after[i - 1].le;
      const upper = after[i].le;
      if (upper === Infinity) return lower; // beyond the last bound: report the bound
      const below = i === 0 ? 0 : counts[i - 1];
      const inBucket = counts[i] - below;
      return inBucket > 0 ? lower + ((upper - lower) * (rank - below)) / inBucket : upper;
    }
  }
  return null;
}

/** The last `windowMs` of samples, and the series derived from them. */
export class Traffic {
  /** The span to draw: the history so far (at least a minute), up to the whole window. */
  span(now) {
    const first = this.samples[0];
    return Math.min(this.windowMs, Math.max(60000, first ? now - first.t : 0));
  }

  constructor(windowMs = 5 * 60 * 1000) {
    this.windowMs = windowMs;
    this.samples = [];
  }

  add(metricsText, t = Date.now()) {
    const sample = sampleOf(parseMetrics(metricsText), t);
    const last = this.samples[this.samples.length - 1];
    // A restarted node starts its counters again: start the history again too.
    if (last && Object.keys(sample.events).some((k) => sample.events[k] < (last.events[k] || 0))) this.samples = [];
    this.samples.push(sample);
    while (this.samples.length > 2 && this.samples[0].t < t - this.windowMs) this.samples.shift();
  }

  /** {type: [{t, v}]} events per second, for the types seen moving in the window. */
  rates() {
    const out = {};
    for (let i = 1; i < this.samples.length; i++) {
      const a = this.samples[i - 1];
      const b = this.samples[i];
      const dt = (b.t - a.t) / 1000;
      if (dt <= 0) continue;
      for (const type of Object.keys(b.events)) {
        const v = (b.events[type] - (a.events[type] || 0)) / dt;
        (out[type] ||= []).push({ t: b.t, v });
      }
    }
    for (const type of Object.keys(out)) if (out[type].every((p) => p.v === 0)) delete out[type];
    return out;
  }

  /** {p50: [{t, v}], p99: [...]} in milliseconds; null where no event arrived in the interval. */
  latency() {
    const out = { p50: [], p99: [] };
    for (let i = 1; i < this.samples.length; i++) {
      const a = this.samples[i - 1].buckets;
      const b = this.samples[i].buckets;
      const t = this.samples[i].t;
      for (const [key, q] of [["p50", 0.5], ["p99", 0.99]]) {
        const v = quantile(q, a, b);
        out[key].push({ t, v: v === null ? null : v * 1000 });
      }
    }
    return out;
  }
}

export const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
  "#7f7f7f", "#bcbd22"];

/** A stable colour per name, so a type keeps its colour while others come and go. */
const colours = new Map();
export function colourOf(name) {
  if (!colours.has(name)) colours.set(name, PALETTE[colours.size % PALETTE.length]);
  return colours.get(name);
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function format(v, unit) {
  const text = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${text.replace(/\.?0+$/, "") || "0"}${unit}`;
}

/**
 * Draws `lines` ({name: [{t, v}]}) over the last `windowMs` ending `now` on `canvas`, with a y axis in `unit`, and
 * the legend (name and latest value) as text in `legend`.
 */
export function drawChart(canvas, legend, lines, { now, windowMs, unit, empty }) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(width * dpr)) canvas.width = Math.round(width * dpr);
  if (canvas.height !== Math.round(height * dpr)) canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 44, right: 8, top: 8, bottom: 18 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const names = Object.keys(lines).sort();
  let max = 0;
  for (const name of names) for (const p of lines[name]) if (p.v !== null && p.v > max) max = p.v;
  max = niceMax(max);
  const x = (t) => pad.left + w * (1 - (now - t) / windowMs);
  const y = (v) => pad.top + h * (1 - v / max);

  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#6b7480";
  ctx.strokeStyle = "#dde1e6";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const f of [0, 0.5, 1]) {
    const yy = Math.round(y(max * f)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, yy);
    ctx.lineTo(pad.left + w, yy);
    ctx.stroke();
    ctx.fillText(format(max * f, unit), pad.left - 4, yy);
  }
  ctx.textBaseline = "alphabetic";
  ctx.textAlign = "left";
  ctx.fillText(windowMs >= 60000 ? `-${Math.round(windowMs / 60000)}m` : `-${Math.round(windowMs / 1000)}s`, pad.left,
    height - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", pad.left + w, height - 4);

  ctx.lineWidth = 1.5;
  for (const name of names) {
    ctx.strokeStyle = colourOf(name);
    ctx.beginPath();
    let drawing = false;
    const points = lines[name];
    points.forEach((p, i) => {
      if (p.v === null || p.t < now - windowMs) {
        drawing = false;
        return;
      }
      if (drawing) ctx.lineTo(x(p.t), y(p.v));
      else ctx.moveTo(x(p.t), y(p.v));
      drawing = true;
      // A point with no neighbour would draw nothing: mark it.
      const next = points[i + 1];
      if (i === 0 || points[i - 1].v === null) {
        if (!next || next.v === null) ctx.arc(x(p.t), y(p.v), 1.5, 0, 2 * Math.PI);
      }
    });
    ctx.stroke();
  }

  const items = names.map((name) => {
    const li = document.createElement("li");
    li.style.setProperty("--swatch", colourOf(name));
    const last = [...lines[name]].reverse().find((p) => p.v !== null);
    li.textContent = `${name} ${last ? format(last.v, unit) : "–"}`;
    return li;
  });
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = empty;
    items.push(li);
  }
  legend.replaceChildren(...items);
}
