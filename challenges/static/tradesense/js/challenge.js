// The challenge page: snapshot + live frames -> stats, equity curve, meters, ticket,
// positions and orders. Every figure comes from the REST API; frames only say "this
// changed, at this version" (plus the new values where the frame carries them).
import {
  _, ngettext, fmt, api, ApiError, LiveStream, createWithRetry, newKey, throttle,
  money, price, qty, pct, timeOf, el, setLive, toast,
} from "./common.js";
import { EquityChart } from "./chart.js";

const PAGE = JSON.parse(document.getElementById("page-data").textContent);
const ID = PAGE.challenge;
const BASE = `/challenges/${ID}`;
const RULES = PAGE.rules || {};
const DECIMALS = PAGE.price_decimals || {};
const px = (symbol, value) => price(value, DECIMALS[symbol]);

const S = {
  version: null,
  challenge: null,
  positions: [],
  prices: new Map(),
  myOrders: new Set(), // client_order_ids submitted from this tab (no toast for those)
  knownOrders: new Set(),
  ordersLoaded: false,
};

const $ = (id) => document.getElementById(id);
const chart = new EquityChart($("chart"));

// ---------------------------------------------------------------- snapshot
async function loadChallenge() {
  const c = await api("GET", BASE);
  applySnapshot(c);
  return c;
}

function applySnapshot(c) {
  // An answer older than what a frame already told us is ignored (it raced the frame).
  if (S.version !== null && Number.isInteger(c.version) && c.version < S.version) return;
  const before = S.challenge;
  S.challenge = { ...(S.challenge || {}), ...c };
  if (Number.isInteger(c.version)) S.version = c.version;
  render();
  if (c.equity !== undefined) chart.addPoint(c.marked_at || new Date(), c.equity);
  if (before && before.status === "active" && c.status !== "active") announceEnd(c);
}

function applyPartial(data, at) {
  if (!data || !S.challenge) return;
  const patch = {};
  for (const k of ["balance", "equity", "status", "daily_loss_floor", "max_loss_floor", "profit_target_balance", "day_start_equity", "trading_days"]) {
    if (data[k] !== undefined && data[k] !== null) patch[k] = data[k];
  }
  if (!Object.keys(patch).length) return;
  S.challenge = { ...S.challenge, ...patch };
  render();
  if (patch.equity !== undefined) chart.addPoint(at || new Date(), patch.equity);
}

function announceEnd(c) {
  if (c.status === "failed") toast(_("This challenge has failed. See why below."), "error", 8000);
  if (c.status === "passed") toast(_("Challenge passed. Well done!"), "ok", 8000);
}

// ---------------------------------------------------------------- rendering
const num = (v) => (v === null || v === undefined || v === "" ? null : Number(v));
const clamp01 = (f) => Math.max(0, Math.min(1, f));

function render() {
  const c = S.challenge;
  if (!c) return;
  const cur = c.currency || PAGE.currency || "";

  const badge = $("status-badge");
  badge.className = `badge badge-${c.status}`;
  badge.dataset.status = c.status;
  badge.textContent = { active: _("Active"), passed: _("Passed"), failed: _("Failed") }[c.status] || c.status;
  document.body.dataset.status = c.status;

  setLive($("stat-balance"), money(c.balance));
  setLive($("stat-equity"), money(c.equity));
  const start = num(c.starting_balance);
  const eq = num(c.equity);
  const bal = num(c.balance);
  if (start !== null && eq !== null) {
    const total = eq - start;
    const node = $("stat-total-pl");
    setLive(node, money(total.toFixed(2), { sign: true }));
    node.className = `stat-value ${total > 0 ? "up" : total < 0 ? "down" : ""}`;
    $("stat-total-pct").textContent = `${pct((total / start) * 100, 2)} · ${cur}`;
  }
  if (eq !== null && bal !== null) {
    const open = eq - bal;
    const node = $("stat-open-pl");
    setLive(node, money(open.toFixed(2), { sign: true }));
    node.className = `stat-value ${open > 0 ? "up" : open < 0 ? "down" : ""}`;
  }

  renderMeters(c, cur);
  renderBreach(c);
  $("passed-card").hidden = c.status !== "passed";
  const active = c.status === "active";
  $("ticket").querySelectorAll("input, select, button").forEach((n) => (n.disabled = !active));
  $("ticket-closed").hidden = active;
  // An ended challenge takes no orders and has no daily reset to count down to.
  $("ticket-card").hidden = !active;
  $("countdown").hidden = !active;
  if (!active) $("ticket-ok").hidden = true;
  document.querySelectorAll("#positions button.close").forEach((b) => (b.disabled = !active));

  chart.setLevels({
    target: c.profit_target_balance,
    daily: active ? c.daily_loss_floor : null,
    max: c.max_loss_floor,
  });
}

function meter(id, fraction, valueText, sub, kind = "loss") {
  const m = $(id);
  const f = clamp01(fraction);
  m.querySelector(".meter-fill").style.width = `${(f * 100).toFixed(1)}%`;
  setLive(m.querySelector(".meter-value"), valueText);
  m.querySelector(".meter-sub").textContent = sub;
  if (kind === "loss") m.dataset.level = f >= 0.8 ? "danger" : f >= 0.5 ? "warn" : "ok";
  m.dataset.fraction = f.toFixed(4);
}

function renderMeters(c, cur) {
  const start = num(c.starting_balance);
  const eq = num(c.equity);
  const bal = num(c.balance);
  const dailyPct = num(RULES.max_daily_loss_pct);
  const totalPct = num(RULES.max_total_loss_pct);

  // Loss used = how far equity sits below the level the floor hangs from, as a share
  // of the limit. Reading the floors from the snapshot keeps every anchor mode right.
  if (start !== null && eq !== null && dailyPct !== null && num(c.daily_loss_floor) !== null) {
    const limit = (start * dailyPct) / 100;
    const anchor = num(c.daily_loss_floor) + limit;
    const used = Math.max(0, anchor - eq);
    meter("m-daily", used / limit, pct((used / limit) * 100),
      fmt(_("%(used)s of %(limit)s %(cur)s · floor %(floor)s"), { used: money(used.toFixed(2)), limit: money(limit.toFixed(2)), cur, floor: money(c.daily_loss_floor) }));
  }
  if (start !== null && eq !== null && totalPct !== null && num(c.max_loss_floor) !== null) {
    const limit = (start * totalPct) / 100;
    const ref = num(c.max_loss_floor) + limit;
    const used = Math.max(0, ref - eq);
    meter("m-total", used / limit, pct((used / limit) * 100),
      fmt(_("%(used)s of %(limit)s %(cur)s · floor %(floor)s"), { used: money(used.toFixed(2)), limit: money(limit.toFixed(2)), cur, floor: money(c.max_loss_floor) }));
  }
  const target = num(c.profit_target_balance);
  if (start !== null && bal !== null && target !== null && target > start) {
    const f = (bal - start) / (target - start);
    meter("m-target", f, pct(Math.max(0, f) * 100),
      fmt(_("Balance %(bal)s of %(target)s %(cur)s"), { bal: money(c.balance), target: money(c.profit_target_balance), cur }), "good");
  }
  const minDays = num(c.min_trading_days ?? RULES.min_trading_days);
  if (minDays !== null) {
    const days = num(c.trading_days) || 0;
    meter("m-days", minDays ? days / minDays : 1, fmt(_("%(done)s of %(min)s"), { done: days, min: minDays }),
      days >= minDays ? _("Minimum reached") : _("A day counts when an order fills that day"), "good");
  }
}

const RULE_WORDS = {
  max_daily_loss: () => _("Maximum daily loss"),
  max_total_loss: () => _("Maximum total loss"),
  max_duration: () => _("Maximum duration"),
  inactivity: () => _("Inactivity"),
};

function renderBreach(c) {
  const card = $("breach-card");
  card.hidden = c.status !== "failed";
  if (c.status !== "failed") return;
  const b = c.breach || null;
  const msg = (b && b.message) || c.failure_reason || _("A rule was broken.");
  $("breach-message").textContent = msg;
  const dl = $("breach-details");
  dl.replaceChildren();
  if (!b) return;
  const cur = c.currency || "";
  const add = (k, v) => {
    if (v === null || v === undefined || v === "") return;
    dl.append(el("dt", { text: k }), el("dd", { text: v }));
  };
  add(_("Rule"), (RULE_WORDS[b.rule] || (() => b.rule))());
  add(_("Limit (floor)"), b.threshold !== undefined ? `${money(b.threshold)} ${cur}` : null);
  add(_("Equity seen"), b.observed !== undefined ? `${money(b.observed)} ${cur}` : null);
  add(_("When"), b.at ? new Date(b.at).toLocaleString(document.documentElement.lang) : null);
  if (b.prices && typeof b.prices === "object") {
    const list = Object.entries(b.prices).map(([sym, p]) => `${sym} ${px(sym, p)}`).join(", ");
    add(_("Prices at the breach"), list);
  }
  add(_("Detected"), b.detected_by === "fill" ? _("when an order filled") : b.detected_by === "sweep" ? _("by the risk monitor") : b.detected_by);
}

// ---------------------------------------------------------------- positions
async function loadPositions() {
  const data = await api("GET", `${BASE}/positions`);
  S.positions = Array.isArray(data) ? data : data.results || [];
  renderPositions();
}

function renderPositions() {
  const body = $("positions").tBodies[0];
  const active = S.challenge ? S.challenge.status === "active" : true;
  const rows = S.positions.map((p) => {
    const pl = num(p.unrealized_pl) || 0;
    const side = p.side || (String(p.qty).startsWith("-") ? "short" : "long");
    const close = el("button", {
      class: "btn btn-small btn-ghost-danger close",
      type: "button",
      disabled: !active,
      "data-symbol": p.symbol,
      onclick: () => closePosition(p.symbol, close),
    }, _("Close"));
    return el("tr", { "data-symbol": p.symbol },
      el("td", { "data-label": _("Symbol") }, el("strong", { text: p.symbol })),
      el("td", { "data-label": _("Side") }, el("span", { class: `badge badge-${side === "short" ? "sell" : "buy"}`, text: side === "short" ? _("Short") : _("Long") })),
      el("td", { class: "end", "data-label": _("Quantity") }, qty(p.qty)),
      el("td", { class: "end", "data-label": _("Entry") }, px(p.symbol, p.avg_entry_price)),
      el("td", { class: "end", "data-label": _("Price") }, px(p.symbol, p.current_price)),
      el("td", { class: "end", "data-label": _("Value") }, money(p.market_value)),
      el("td", { class: `end ${pl > 0 ? "up" : pl < 0 ? "down" : ""}`, "data-label": _("P&L"), "data-role": "pl" }, money(p.unrealized_pl, { sign: true })),
      el("td", { class: "end", "data-label": "" }, close),
    );
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 8 }, _("No open position."))));
  body.replaceChildren(...rows);
  $("stat-open-count").textContent = S.positions.length
    ? fmt(ngettext("%(n)s open position", "%(n)s open positions", S.positions.length), { n: S.positions.length })
    : _("no open position");
  $("positions-updated").textContent = S.positions.length ? fmt(_("updated %(t)s"), { t: timeOf(new Date()) }) : "";
}

async function closePosition(symbol, button) {
  button.disabled = true;
  try {
    const order = await api("DELETE", `${BASE}/positions/${encodeURIComponent(symbol)}`);
    if (order && order.client_order_id) S.myOrders.add(order.client_order_id);
    toast(fmt(_("Closed %(symbol)s at %(price)s"), { symbol, price: px(symbol, order && order.filled_avg_price) }), "ok");
    await Promise.allSettled([loadPositions(), loadOrders(), loadChallenge()]);
  } catch (e) {
    toast(e.message, "error", 7000);
    button.disabled = false;
    if (e instanceof ApiError && (e.status === 404 || e.status === 409)) refreshAll.now();
  }
}

// ---------------------------------------------------------------- orders
async function loadOrders() {
  const data = await api("GET", `${BASE}/orders?limit=50`);
  const orders = Array.isArray(data) ? data : data.results || [];
  const body = $("orders").tBodies[0];
  const REASONS = { close: _("closed by you"), breach: _("closed at breach") };
  const rows = orders.map((o) => {
    const fresh = S.ordersLoaded && !S.knownOrders.has(o.id);
    S.knownOrders.add(o.id);
    return el("tr", { class: fresh ? "new-row" : null, "data-order": o.id },
      el("td", { "data-label": _("Time") }, timeOf(o.filled_at || o.created_at)),
      el("td", { "data-label": _("Symbol") }, el("strong", { text: o.symbol })),
      el("td", { "data-label": _("Side") }, el("span", { class: `badge badge-${o.side}`, text: o.side === "buy" ? _("Buy") : _("Sell") })),
      el("td", { class: "end", "data-label": _("Quantity") }, qty(o.filled_qty || o.qty)),
      el("td", { class: "end", "data-label": _("Fill price") }, px(o.symbol, o.filled_avg_price)),
      el("td", { "data-label": _("Status") }, el("span", {}, o.status === "filled" ? _("Filled") : o.status, o.reason && REASONS[o.reason] ? el("span", { class: "muted small", text: ` · ${REASONS[o.reason]}` }) : null)),
    );
  });
  S.ordersLoaded = true;
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 6 }, _("No order yet."))));
  body.replaceChildren(...rows);
}

// ---------------------------------------------------------------- ticket
async function loadPrices() {
  const data = await api("GET", "/market/prices");
  const list = (data && data.results) || [];
  const select = $("t-symbol");
  const chosen = select.value;
  const firstLoad = !S.prices.size;
  S.prices = new Map(list.map((p) => [p.symbol, p]));
  if (firstLoad) {
    select.replaceChildren(el("option", { value: "" }, _("Choose a symbol")), ...list.map((p) => el("option", { value: p.symbol }, p.symbol)));
    const remembered = sessionStorage.getItem("ts-symbol");
    if (remembered && S.prices.has(remembered)) select.value = remembered;
  } else if (chosen) {
    select.value = chosen;
  }
  showPrice();
}

function showPrice() {
  const sym = $("t-symbol").value;
  const p = S.prices.get(sym);
  $("t-price").textContent = p ? fmt(_("Last price %(price)s"), { price: px(sym, p.price) }) : "";
  const q = num($("t-qty").value.replace(",", "."));
  const size = p ? Number(p.contract_size || 1) : 1;
  $("t-notional").textContent = p && q
    ? fmt(_("Notional about %(value)s USD at the last price"), { value: money((q * size * Number(p.price)).toFixed(2)) })
    : "";
}

function clearTicketErrors() {
  $("ticket-error").hidden = true;
  $("ticket").querySelectorAll(".field").forEach((f) => f.classList.remove("has-error"));
  $("ticket").querySelectorAll("[data-error-for]").forEach((p) => (p.textContent = ""));
}

function showTicketError(e) {
  const box = $("ticket-error");
  box.replaceChildren(el("strong", { text: e.message }));
  let placed = false;
  for (const [field, problems] of Object.entries(e.fields || {})) {
    const slot = $("ticket").querySelector(`[data-error-for="${CSS.escape(field)}"]`);
    const text = (Array.isArray(problems) ? problems : [problems]).join(" ");
    if (slot) {
      slot.textContent = text;
      slot.closest(".field").classList.add("has-error");
      placed = true;
    } else {
      box.append(el("div", { text: `${field}: ${text}` }));
    }
  }
  // The summary line stays even when every problem sits under its field: on a phone
  // the field may be scrolled out of view.
  box.hidden = false;
  if (placed) box.dataset.fields = Object.keys(e.fields).join(" ");
}

async function submitOrder(ev) {
  ev.preventDefault();
  clearTicketErrors();
  $("ticket-ok").hidden = true;
  const symbol = $("t-symbol").value;
  const side = $("ticket").querySelector('input[name="side"]:checked').value;
  const q = $("t-qty").value.trim().replace(",", ".");
  const local = {};
  if (!symbol) local.symbol = [_("Choose a symbol.")];
  if (!q) local.qty = [_("Enter a quantity.")];
  if (Object.keys(local).length) {
    showTicketError(new ApiError(400, "invalid", _("Check the highlighted fields."), local));
    return;
  }
  const btn = $("t-submit");
  btn.disabled = true;
  const clientOrderId = newKey();
  S.myOrders.add(clientOrderId);
  try {
    // One key for the order and its retries: a lost answer retried fills once.
    const order = await createWithRetry(`${BASE}/orders`, { symbol, side, qty: q, type: "market", client_order_id: clientOrderId }, { key: clientOrderId });
    const ok = $("ticket-ok");
    ok.textContent = fmt(side === "buy" ? _("Bought %(qty)s %(symbol)s at %(price)s") : _("Sold %(qty)s %(symbol)s at %(price)s"), {
      qty: qty(order.filled_qty || q), symbol, price: px(symbol, order.filled_avg_price),
    });
    ok.hidden = false;
    sessionStorage.setItem("ts-symbol", symbol);
    await Promise.allSettled([loadPositions(), loadOrders(), loadChallenge()]);
  } catch (e) {
    showTicketError(e);
    if (e instanceof ApiError && e.status === 409) refreshAll.now();
  } finally {
    btn.disabled = !(S.challenge && S.challenge.status === "active");
  }
}

function syncSideButton() {
  const side = $("ticket").querySelector('input[name="side"]:checked').value;
  const btn = $("t-submit");
  btn.className = `btn btn-block ${side === "buy" ? "btn-buy" : "btn-sell"}`;
  btn.textContent = side === "buy" ? _("Place buy order") : _("Place sell order");
}

// ---------------------------------------------------------------- history + reset
async function loadHistory() {
  const h = await api("GET", `${BASE}/portfolio/history`);
  chart.setHistory(h);
}

const resets = (PAGE.resets || []).map((r) => new Date(r).getTime()).filter((t) => !Number.isNaN(t));
let lastResetSeen = null;
function tickCountdown() {
  const now = Date.now();
  const next = resets.find((t) => t > now);
  const clock = $("reset-clock");
  if (!next) {
    clock.textContent = "--:--:--";
    return;
  }
  if (lastResetSeen !== null && next !== lastResetSeen) refreshChallenge.now(); // a new trading day began
  lastResetSeen = next;
  const secs = Math.floor((next - now) / 1000);
  const h = String(Math.floor(secs / 3600)).padStart(2, "0");
  const m = String(Math.floor((secs % 3600) / 60)).padStart(2, "0");
  const s = String(secs % 60).padStart(2, "0");
  clock.textContent = `${h}:${m}:${s}`;
  $("reset-at").textContent = fmt(_("at %(local)s your time (%(plan)s)"), {
    local: new Date(next).toLocaleTimeString(document.documentElement.lang, { hour: "2-digit", minute: "2-digit" }),
    plan: PAGE.reset_label || "",
  });
}

// ---------------------------------------------------------------- live
const refreshChallenge = throttle(loadChallenge, 400);
const refreshPositions = throttle(loadPositions, 1000);
const refreshOrders = throttle(loadOrders, 700);
const refreshAll = throttle(async () => {
  await Promise.allSettled([loadChallenge(), loadPositions(), loadOrders()]);
}, 500);

let framesSeen = 0;
function onFrame(f) {
  if (f.challenge !== ID) return;
  document.body.dataset.frames = String(++framesSeen);
  const v = f.version;
  if (Number.isInteger(v)) {
    if (S.version !== null) {
      // The first version this frame accounts for (coalesced equity frames cover a run).
      const from = Number.isInteger(f.coalesced_from) ? f.coalesced_from : v;
      if (from > S.version + 1) {
        // A frame was lost: the snapshot is the truth.
        refreshAll.now();
      }
      if (v < S.version) return; // older than what we show
    }
    S.version = Math.max(S.version ?? v, v);
  }
  const data = f.data || {};
  switch (f.type) {
    case "equity.updated":
      applyPartial(data, data.marked_at || data.at);
      if (S.positions.length || data.positions) refreshPositions();
      break;
    case "order.filled":
      applyPartial(data);
      refreshOrders();
      refreshPositions();
      refreshChallenge();
      if (data.client_order_id && !S.myOrders.has(data.client_order_id)) {
        const words = { qty: qty(data.filled_qty || data.qty), symbol: data.symbol || "", price: px(data.symbol, data.filled_avg_price) };
        if (data.reason === "breach") toast(fmt(_("Position closed at the breach: %(qty)s %(symbol)s at %(price)s"), words), "error", 8000);
        else toast(fmt(data.side === "sell" ? _("Order filled elsewhere: sold %(qty)s %(symbol)s at %(price)s") : _("Order filled elsewhere: bought %(qty)s %(symbol)s at %(price)s"), words));
      }
      break;
    case "position.updated":
      refreshPositions();
      refreshChallenge();
      break;
    case "challenge.status":
      applyPartial(data);
      refreshAll.now();
      break;
    case "risk.warning": {
      applyPartial({ equity: data.equity });
      const rule = (RULE_WORDS[data.rule] || (() => data.rule || ""))();
      toast(fmt(_("Warning: %(used)s of your %(rule)s limit is used."), { used: pct(Number(data.level ?? data.used_pct ?? 0), 0), rule: rule.toLowerCase() }), "warn", 9000);
      refreshChallenge();
      break;
    }
    default:
      refreshChallenge();
  }
}

async function resync(reason) {
  const jobs = [loadChallenge(), loadPositions(), loadOrders()];
  if (reason !== "periodic") jobs.push(loadHistory(), loadPrices());
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
}

// ---------------------------------------------------------------- start
$("ticket").addEventListener("submit", submitOrder);
$("ticket").querySelectorAll('input[name="side"]').forEach((r) => r.addEventListener("change", syncSideButton));
$("t-symbol").addEventListener("change", showPrice);
$("t-qty").addEventListener("input", showPrice);
syncSideButton();
tickCountdown();
setInterval(tickCountdown, 1000);
// The ticket's last price refreshes every few seconds (prices move with every tick).
setInterval(() => {
  if (document.visibilityState === "visible") loadPrices().catch(() => {});
}, 5000);
// Open positions are marked to market by the risk sweep without a version bump or a
// frame (marking is not a state change), so while positions are open and the page is
// watched, equity and P&L are re-read at the pace prices move. Fills, warnings, status
// changes and breaches still arrive as frames at once.
const MARK_REFRESH_MS = 2500;
setInterval(() => {
  const open = S.positions.length && S.challenge && S.challenge.status === "active";
  if (open && document.visibilityState === "visible" && document.body.dataset.live === "live") {
    refreshChallenge();
    refreshPositions();
  }
}, MARK_REFRESH_MS);

if (PAGE.initial) applySnapshot(PAGE.initial);
resync("initial").catch(() => {});
const stream = new LiveStream({
  challenges: [ID],
  onFrame,
  onResync: resync,
  onState: (state) => {
    document.body.dataset.live = state;
  },
});
stream.start();
window.__ts = { stream, state: S };
