// The live tail: GET /v1/events read with fetch() (so that it carries the Authorization header), the last N events
// kept, shown newest first, filtered by type and account, paused and resumed. All data is shown as text.

import { Backoff, readSse, sleep } from "./api.js";

export const EVENT_TYPES = ["state_change", "email_push", "calendar_alert", "push_subscription_set",
  "push_subscription_removed", "blocked_ip", "unblocked_ip", "reload", "certificate_renewed", "cache_invalidate",
  "cache_invalidate_all", "queue_paused", "queue_resumed", "queue_refresh", "custom", "stalwart", "tokens_revoked"];

/** Fields shown in their own columns, left out of the data column. */
const SHOWN = new Set(["type", "origin_node", "origin_bus", "origin_time_us", "account_id"]);

export class Tail {
  constructor() {
    this.events = [];
    this.paused = false;
    this.missedWhilePaused = 0;
    this.body = document.querySelector("#tail-list tbody");
    this.state = document.getElementById("tail-state");
    this.type = document.getElementById("tail-type");
    this.account = document.getElementById("tail-account");
    this.limitInput = document.getElementById("tail-limit");
    this.pauseButton = document.getElementById("tail-pause");
    for (const type of [...EVENT_TYPES, "resync", "lagged"]) {
      const option = document.createElement("option");
      option.value = type;
      option.textContent = type;
      this.type.append(option);
    }
    this.type.addEventListener("change", () => this.render());
    for (const ev of ["input", "change"]) this.account.addEventListener(ev, () => this.render());
    this.limitInput.addEventListener("change", () => {
      this.trim();
      this.render();
    });
    document.getElementById("tail-form").addEventListener("submit", (ev) => ev.preventDefault());
    this.pauseButton.addEventListener("click", () => this.setPaused(!this.paused));
    document.getElementById("tail-clear").addEventListener("click", () => {
      this.events = [];
      this.missedWhilePaused = 0;
      this.render();
    });
  }

  limit() {
    const n = Number(this.limitInput.value);
    return Number.isFinite(n) && n >= 1 ? Math.min(Math.floor(n), 5000) : 200;
  }

  trim() {
    const n = this.limit();
    if (this.events.length > n) this.events.splice(0, this.events.length - n);
  }

  setPaused(paused) {
    this.paused = paused;
    this.pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      this.missedWhilePaused = 0;
      this.render();
    }
    this.showState();
  }

  showState(text) {
    if (text !== undefined) this.connection = text;
    const extra = this.paused ? ` · paused, ${this.missedWhilePaused} new since` : "";
    this.state.textContent = `(${this.connection || "connecting"}; ${this.events.length} kept${extra})`;
  }

  matches(item) {
    const type = this.type.value;
    if (type && item.type !== type) return false;
    const account = this.account.value.trim();
    if (account && String(item.data.account_id ?? "") !== account) return false;
    return true;
  }

  row(item) {
    const tr = document.createElement("tr");
    tr.dataset.type = item.type;
    const origin = item.data.origin_node === undefined
      ? ""
      : `${item.data.origin_bus === "stalwart" ? "stalwart " : "node "}${item.data.origin_node}`;
    const rest = {};
    for (const [k, v] of Object.entries(item.data)) if (!SHOWN.has(k)) rest[k] = v;
    const cells = [
      new Date(item.received).toLocaleTimeString(),
      item.type,
      origin,
      item.data.account_id === undefined ? "" : String(item.data.account_id),
      JSON.stringify(rest),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 4) td.className = "data";
      if (item.type === "resync" || item.type === "lagged") td.classList.add("bad");
      tr.append(td);
    });
    return tr;
  }

  render() {
    const rows = [];
    for (let i = this.events.length - 1; i >= 0; i--) {
      if (this.matches(this.events[i])) rows.push(this.row(this.events[i]));
    }
    this.body.replaceChildren(...rows);
    this.showState();
  }

  push(event, dataText) {
    let data;
    try {
      data = JSON.parse(dataText);
    } catch {
      data = { raw: dataText };
    }
    if (typeof data !== "object" || data === null) data = { value: data };
    const item = { type: data.type || event, data, received: Date.now() };
    this.events.push(item);
    this.trim();
    if (this.paused) {
      this.missedWhilePaused++;
    } else if (this.matches(item)) {
      this.body.prepend(this.row(item));
      const shown = this.body.children;
      // At most `limit` rows, like the buffer behind them.
      while (shown.length > this.limit()) shown[shown.length - 1].remove();
    }
    this.showState();
  }

  /** Reads the stream for ever, reconnecting with back-off. */
  async run() {
    const backoff = new Backoff();
    for (;;) {
      try {
        await readSse(
          "/v1/events",
          undefined,
          () => {
            backoff.reset();
            this.showState("live");
          },
          ({ event, data }) => this.push(event, data),
        );
        this.showState("stream ended, reconnecting");
      } catch (err) {
        this.showState(`stream failed (${err.message || err}), reconnecting`);
      }
      await sleep(backoff.take());
    }
  }
}
