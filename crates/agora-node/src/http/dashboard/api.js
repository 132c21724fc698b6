// The node's API as any client uses it: relative URLs on this origin, the bearer token (when the API asks for one)
// in the Authorization header only, never in a URL; streams read with fetch() so that they carry the header too.

const TOKEN_KEY = "agora.token";

/** An API answer that is not 2xx (other than 401, which asks for the token and retries). */
export class HttpError extends Error {
  constructor(status, body) {
    super(`HTTP ${status}${body && body.error ? `: ${body.error}` : ""}`);
    this.status = status;
    this.body = body;
  }
}

let tokenRequest = null;

/** Resolves once the user entered a token; every request that got a 401 meanwhile waits on the same form. */
function askToken(rejected) {
  if (tokenRequest) return tokenRequest;
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const message = document.getElementById("token-message");
  message.textContent = rejected
    ? "The token was rejected (401). Enter the node's current bearer token."
    : "This node's API answered 401: enter its bearer token. It stays in this tab only.";
  form.hidden = false;
  input.value = "";
  input.focus();
  tokenRequest = new Promise((resolve) => {
    const submit = (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = "";
      form.hidden = true;
      form.removeEventListener("submit", submit);
      tokenRequest = null;
      resolve();
    };
    form.addEventListener("submit", submit);
  });
  return tokenRequest;
}

/**
 * fetch() against the API with the token, if any. On 401 the token is asked for (once for all pending requests) and
 * the request repeated. Network failures reject with the browser's TypeError; other statuses are returned.
 */
export async function request(path, options = {}) {
  for (;;) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const headers = new Headers(options.headers || {});
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const response = await fetch(path, { ...options, headers, cache: "no-store", credentials: "omit" });
    if (response.status !== 401) return response;
    // Drain the answer, forget a token the node refused, and wait for a new one.
    await response.text().catch(() => "");
    if (sessionStorage.getItem(TOKEN_KEY) === token) sessionStorage.removeItem(TOKEN_KEY);
    await askToken(token !== null);
  }
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** JSON from a GET; `ok` lists statuses besides 2xx that are answers, not errors (e.g. 404 for a lookup). */
export async function getJson(path, ok = []) {
  const response = await request(path, { headers: { Accept: "application/json" } });
  const body = await parse(response);
  if (!response.ok && !ok.includes(response.status)) throw new HttpError(response.status, body);
  return { status: response.status, body };
}

export async function getText(path) {
  const response = await request(path);
  const text = await response.text();
  if (!response.ok) throw new HttpError(response.status, null);
  return text;
}

/** A write: JSON body (if any), JSON answer; non-2xx rejects with HttpError. */
export async function send(method, path, body) {
  const options = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await request(path, options);
  const answer = await parse(response);
  if (!response.ok) throw new HttpError(response.status, answer);
  return answer;
}

/**
 * Reads a Server-Sent Events stream: calls onEvent({event, data}) for each event until the stream ends (resolves)
 * or fails (rejects). `signal` aborts it.
 */
export async function readSse(path, signal, onOpen, onEvent) {
  const response = await request(path, { signal, headers: { Accept: "text/event-stream" } });
  if (!response.ok) throw new HttpError(response.status, await parse(response));
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      let line = buffer.slice(0, end);
      buffer = buffer.slice(end + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length > 0) onEvent({ event, data: data.join("\n") });
        event = "message";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue; // keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "event") event = val;
      else if (field === "data") data.push(val);
    }
  }
}

/** Delays for retries: 1 s doubling to 30 s, reset on success. */
export class Backoff {
  constructor(min = 1000, max = 30000) {
    this.min = min;
    this.max = max;
    this.next = min;
  }
  reset() {
    this.next = this.min;
  }
  take() {
    const delay = this.next;
    this.next = Math.min(this.max, this.next * 2);
    return delay;
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
