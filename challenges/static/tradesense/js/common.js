// Shared by every dashboard page: the REST client (session cookie + CSRF), number
// formatting, toasts, and the live stream with its reconnect/resync/poll behaviour.
// Plain ES modules, no build step. Strings go through Django's JavaScript catalog.

const _ = (s) => (window.gettext ? window.gettext(s) : s);
const ngettext = (one, many, n) => (window.ngettext ? window.ngettext(one, many, n) : n === 1 ? one : many);
const fmt = (s, obj) => (window.interpolate ? window.interpolate(s, obj, true) : s.replace(/%\((\w+)\)s/g, (m, k) => obj[k]));
export { _, ngettext, fmt };

const LANG = document.documentElement.lang || "en";
// Trading screens read best with Western digits in every language.
const NUM_LOCALE = `${LANG}-u-nu-latn`;

// ---------------------------------------------------------------- REST client
export class ApiError extends Error {
  constructor(status, code, message, fields = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || {};
  }
  get transient() {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) return meta.content;
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

function defaultMessage(status) {
  if (status === 401) return _("Your session has ended. Please log in again.");
  if (status === 403) return _("You are not allowed to do this.");
  if (status === 404) return _("Not found.");
  if (status === 429) return _("Too many requests; wait a moment and try again.");
  if (status >= 500) return _("The server is having trouble; try again in a moment.");
  return _("The request was refused.");
}

export function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return "k-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 12);
}

/** Call the REST API (API.md) with the session cookie. Throws ApiError with the
 *  server's {error: {code, message, fields}} body, or status 0 when unreachable. */
export async function api(method, path, { body, idempotencyKey, timeoutMs = 10000 } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let res;
  try {
    res = await fetch("/api/v1" + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal: controller.signal,
    });
  } catch (e) {
    throw new ApiError(0, "unreachable", _("The server cannot be reached right now; we keep retrying."));
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await res.json();
  } catch (e) {
    data = null;
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    if (res.status === 401) goToLogin();
    throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || defaultMessage(res.status), err.fields);
  }
  return data;
}

/** POST something that creates, retrying a lost answer with the same Idempotency-Key
 *  (API.md): a replay returns the first response, so a retry can never act twice. */
export async function createWithRetry(path, body, { key = newKey(), attempts = 3 } = {}) {
  let lastError;
  for (let i = 0; i < attempts; i++) {
    try {
      return await api("POST", path, { body, idempotencyKey: key });
    } catch (e) {
      lastError = e;
      if (!(e instanceof ApiError) || !e.transient) throw e;
      await sleep(400 * (i + 1));
    }
  }
  throw lastError;
}

export function goToLogin() {
  const login = document.body.dataset.loginUrl || "/login/";
  window.location.assign(`${login}?next=${encodeURIComponent(location.pathname + location.search)}`);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Run `fn` at most once per `ms`, trailing call guaranteed (no update is dropped). */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  let running = false;
  let again = false;
  const run = async () => {
    timer = null;
    if (running) {
      again = true;
      return;
    }
    running = true;
    last = Date.now();
    try {
      await fn();
    } catch (e) {
      /* the next call or resync retries */
    } finally {
      running = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  };
  const schedule = () => {
    if (timer) return;
    timer = setTimeout(run, Math.max(0, last + ms - Date.now()));
  };
  schedule.now = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    return run();
  };
  return schedule;
}

// ---------------------------------------------------------------- formatting
const formatters = new Map();
function nf(min, max) {
  const k = `${min}:${max}`;
  if (!formatters.has(k)) {
    formatters.set(k, new Intl.NumberFormat(NUM_LOCALE, { minimumFractionDigits: min, maximumFractionDigits: max }));
  }
  return formatters.get(k);
}

/** Format a decimal string exactly (Intl formats numeric strings as decimals, so no
 *  binary rounding sneaks into a displayed amount). */
export function money(value, { sign = false } = {}) {
  if (value === null || value === undefined || value === "") return "–";
  const s = nf(2, 2).format(String(value));
  return sign && !String(value).startsWith("-") && Number(value) !== 0 ? "+" + s : s;
}

/** A price with the instrument's own decimals when known (EURUSD 1.08500), else as
 *  many as it has, at least two. */
export function price(value, decimals) {
  if (value === null || value === undefined || value === "") return "–";
  const str = String(value);
  if (Number.isInteger(decimals)) return nf(decimals, decimals).format(str);
  const shown = (str.split(".")[1] || "").replace(/0+$/, "").length;
  return nf(Math.min(Math.max(shown, 2), 8), Math.max(shown, 2)).format(str);
}

export function qty(value) {
  if (value === null || value === undefined || value === "") return "–";
  const str = String(value).replace(/^-/, "");
  const decimals = (str.split(".")[1] || "").replace(/0+$/, "").length;
  return nf(Math.min(decimals, 8), Math.max(decimals, 0)).format(str);
}

export function pct(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return `${nf(digits, digits).format(n)} %`;
}

export function toDate(t) {
  if (t === null || t === undefined) return null;
  if (typeof t === "number") return new Date(t < 1e12 ? t * 1000 : t);
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function timeOf(t) {
  const d = toDate(t);
  if (!d) return "–";
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay
    ? d.toLocaleTimeString(LANG, { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : d.toLocaleString(LANG, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Set text and briefly highlight it when the value really changed. */
export function setLive(node, text) {
  if (!node || node.textContent === text) return;
  const had = node.textContent !== "" && node.textContent !== "–";
  node.textContent = text;
  if (had) {
    node.classList.remove("flash");
    void node.offsetWidth;
    node.classList.add("flash");
    setTimeout(() => node.classList.remove("flash"), 700);
  }
}

export function toast(message, kind = "info", ms = 5000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const t = el("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(t);
  setTimeout(() => t.remove(), ms);
}

// ---------------------------------------------------------------- live stream
const POLL_MS = 4000; // while the socket is down, the REST snapshot is re-read this often
const SAFETY_RESYNC_MS = 30000; // even while live, a missed event costs at most this
const PING_MS = 20000;
const PONG_TIMEOUT_MS = 8000;

/**
 * The /ws/v1/stream client. Frames are hints: on every (re)connect `onResync` re-reads
 * the REST snapshot; while the socket is down it is called every few seconds instead.
 *   onFrame(frame)     a server frame {type, challenge, version, data}
 *   onResync(reason)   "connect" | "poll" | "periodic"
 */
export class LiveStream {
  constructor({ challenges = [], onFrame = () => {}, onResync = async () => {}, onState = () => {} } = {}) {
    this.challenges = new Set(challenges);
    this.onFrame = onFrame;
    this.onResync = onResync;
    this.onState = onState;
    this.attempt = 0;
    this.ws = null;
    this.state = "connecting";
    this.everConnected = false;
    this.pollTimer = null;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.safetyTimer = null;
    this.downSince = null;
    this.stopped = false;
  }

  start() {
    window.addEventListener("online", () => this.reconnectNow());
    window.addEventListener("offline", () => this.setState("offline"));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.state !== "live") this.reconnectNow();
    });
    this.connect();
    return this;
  }

  subscribe(id) {
    this.challenges.add(id);
    this.send({ action: "subscribe", challenge: id });
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
  }

  connect() {
    clearTimeout(this.retryTimer);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/ws/v1/stream`);
    } catch (e) {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    if (this.state !== "live") this.setState(this.everConnected ? "reconnecting" : "connecting");
    ws.onopen = () => {
      this.attempt = 0;
      this.everConnected = true;
      this.stopPolling();
      for (const id of this.challenges) this.send({ action: "subscribe", challenge: id });
      this.setState("live");
      this.startPing();
      this.resync("connect");
      clearInterval(this.safetyTimer);
      this.safetyTimer = setInterval(() => this.resync("periodic"), SAFETY_RESYNC_MS);
    };
    ws.onmessage = (ev) => {
      clearTimeout(this.pongTimer);
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "stream.pong" || frame.type === "stream.ready" || frame.type === "stream.subscribed") return;
      if (frame.type === "stream.error") {
        console.warn("stream:", frame.code, frame.message);
        return;
      }
      try {
        this.onFrame(frame);
      } catch (e) {
        console.error(e);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      clearTimeout(this.pongTimer);
      clearInterval(this.safetyTimer);
      if (ev.code === 4401) {
        goToLogin();
        return;
      }
      if (this.stopped) return;
      this.setState(navigator.onLine === false ? "offline" : "reconnecting");
      this.startPolling();
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      /* onclose follows and handles it */
    };
  }

  scheduleReconnect() {
    clearTimeout(this.retryTimer);
    // Exponential backoff with full jitter, capped: a restarted server is not stampeded
    // by every open tab at the same instant.
    const cap = Math.min(10000, 500 * 2 ** this.attempt);
    const delay = 250 + Math.random() * cap;
    this.attempt = Math.min(this.attempt + 1, 8);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    if (this.ws && (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING)) return;
    this.attempt = 0;
    this.connect();
  }

  startPing() {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      this.send({ action: "ping" });
      clearTimeout(this.pongTimer);
      // A half-open connection (a cut network) sends no close: notice it ourselves.
      this.pongTimer = setTimeout(() => this.ws && this.ws.close(), PONG_TIMEOUT_MS);
    }, PING_MS);
  }

  startPolling() {
    if (this.pollTimer) return;
    this.pollTimer = setInterval(() => this.resync("poll"), POLL_MS);
  }

  stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
  }

  async resync(reason) {
    try {
      await this.onResync(reason);
      if (this.state !== "live") this.onState(this.state, { polled: new Date() });
    } catch (e) {
      /* the next poll or reconnect tries again */
    }
  }

  setState(state) {
    if (state !== "live" && this.downSince === null) this.downSince = Date.now();
    if (state === "live") this.downSince = null;
    this.state = state;
    renderConnection(state, this.everConnected);
    this.onState(state, {});
  }
}

let bannerTimer = null;
function renderConnection(state, everConnected) {
  const pill = document.getElementById("conn");
  const banner = document.getElementById("offline-banner");
  const labels = {
    live: _("Live"),
    connecting: _("Connecting…"),
    reconnecting: _("Reconnecting…"),
    offline: _("Offline"),
  };
  if (pill) {
    pill.dataset.state = state;
    pill.textContent = labels[state] || state;
  }
  if (!banner) return;
  clearTimeout(bannerTimer);
  if (state === "live") {
    banner.hidden = true;
    return;
  }
  // A blip shorter than a second is not worth a banner.
  bannerTimer = setTimeout(() => {
    banner.textContent =
      state === "offline"
        ? _("You are offline. The figures shown may be out of date; they refresh as soon as you are back.")
        : everConnected
          ? _("Live updates are interrupted. Reconnecting… figures refresh every few seconds meanwhile.")
          : _("Connecting to live updates… figures refresh every few seconds meanwhile.");
    banner.hidden = false;
  }, 1200);
}

/** Pages without a live view still show the connection pill honestly. */
export function startPlainStream(opts = {}) {
  return new LiveStream(opts).start();
}
