// Blocked IPs (list, look up, block, unblock) and push subscriptions (list, remove), through the public API.

import { getJson, send } from "./api.js";

/** Rows shown at most; the count says how many there are. */
const MAX_ROWS = 500;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function result(el, text, good) {
  el.textContent = text;
  el.className = `result ${good ? "good" : "bad"}`;
}

export function inHuman(ms) {
  if (ms <= 0) return "now";
  const s = Math.round(ms / 1000);
  if (s < 90) return `${s}s`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m}m`;
  const h = Math.round(m / 60);
  return h < 48 ? `${h}h` : `${Math.round(h / 24)}d`;
}

/** A button that acts on its second click within 3 s (the first turns it red), so a stray click removes nothing. */
function removeButton(label, action) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  let timer = null;
  button.addEventListener("click", async () => {
    if (!timer) {
      button.textContent = "confirm";
      button.classList.add("confirm");
      timer = setTimeout(() => {
        timer = null;
        button.textContent = label;
        button.classList.remove("confirm");
      }, 3000);
      return;
    }
    clearTimeout(timer);
    button.disabled = true;
    await action();
  });
  return button;
}

export class Admin {
  constructor(onChange) {
    this.onChange = onChange;
    this.blockedBody = document.querySelector("#blocked-list tbody");
    this.pushBody = document.querySelector("#push-list tbody");
    this.blockResult = document.getElementById("block-result");
    this.pushResult = document.getElementById("push-result");
    this.lookupResult = document.getElementById("lookup-result");

    const blockForm = document.getElementById("block-form");
    blockForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const form = new FormData(blockForm);
      const body = { network: String(form.get("network")).trim() };
      const ttl = String(form.get("ttl") || "").trim();
      const reason = String(form.get("reason") || "").trim();
      if (ttl) body.ttl = ttl;
      if (reason) body.reason = reason;
      try {
        const rule = await send("POST", "/v1/blocked-ips", body);
        const until = rule.expires_at_ms ? ` for ${inHuman(rule.expires_at_ms - Date.now())}` : "";
        result(this.blockResult, `blocked ${rule.network}${until} on every node`, true);
        blockForm.reset();
      } catch (err) {
        result(this.blockResult, `not blocked: ${err.message}`, false);
      }
      this.onChange();
    });

    const lookupForm = document.getElementById("lookup-form");
    lookupForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const ip = String(new FormData(lookupForm).get("ip")).trim();
      try {
        const { status, body } = await getJson(`/v1/blocked-ips/${encodeURIComponent(ip)}`, [404]);
        if (status === 200) {
          const why = body.reason ? ` (${body.reason})` : "";
          result(this.lookupResult, `${ip} is blocked by ${body.network}${why}`, false);
        } else {
          result(this.lookupResult, `${ip} is not blocked`, true);
        }
      } catch (err) {
        result(this.lookupResult, err.message, false);
      }
    });
  }

  async refresh(nodeNow) {
    const [blocked, push] = await Promise.all([
      getJson("/v1/blocked-ips"),
      getJson("/v1/push-subscriptions"),
    ]);
    this.showBlocked(blocked.body || [], nodeNow);
    this.showPush(push.body || []);
  }

  showBlocked(rules, nodeNow) {
    // Not while a removal waits for its confirming click: the re-render would reset the button.
    if (this.blockedBody.querySelector(".confirm")) return;
    document.getElementById("blocked-count").textContent = rules.length > MAX_ROWS
      ? `(${rules.length}, first ${MAX_ROWS} shown)`
      : `(${rules.length})`;
    const rows = rules.slice(0, MAX_ROWS).map((rule) => {
      const tr = document.createElement("tr");
      tr.dataset.network = rule.network;
      tr.append(
        cell(rule.network, "data"),
        cell(rule.expires_at_ms ? `in ${inHuman(rule.expires_at_ms - nodeNow)}` : "never"),
        cell(rule.reason || ""),
        cell(`node ${rule.origin_node}`),
      );
      tr.append(this.removeCell("unblock", `/v1/blocked-ips/${encodeURIComponent(rule.network)}`,
        this.blockResult, `unblocked ${rule.network}`));
      return tr;
    });
    this.blockedBody.replaceChildren(...rows);
  }

  /** A cell with a confirmed remove button: DELETE `path`, then say what happened in `resultEl`. */
  removeCell(label, path, resultEl, done) {
    const td = document.createElement("td");
    td.append(removeButton(label, async () => {
      try {
        await send("DELETE", path);
        result(resultEl, `${done} on every node`, true);
      } catch (err) {
        result(resultEl, `not ${label === "unblock" ? "unblocked" : "removed"}: ${err.message}`, false);
      }
      this.onChange();
    }));
    return td;
  }

  showPush(subscriptions) {
    if (this.pushBody.querySelector(".confirm")) return;
    document.getElementById("push-count").textContent = `(${subscriptions.length})`;
    const rows = subscriptions.slice(0, MAX_ROWS).map((sub) => {
      const tr = document.createElement("tr");
      tr.append(
        cell(sub.id, "data"),
        cell(String(sub.account_id)),
        cell(sub.url, "data"),
        cell(Array.isArray(sub.types) && sub.types.length ? sub.types.join(", ") : "all"),
      );
      tr.append(this.removeCell("remove", `/v1/push-subscriptions/${encodeURIComponent(sub.id)}`,
        this.pushResult, `removed ${sub.id}`));
      return tr;
    });
    this.pushBody.replaceChildren(...rows);
  }
}
