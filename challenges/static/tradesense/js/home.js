// Home: the trader's challenges, kept live (status, balance, equity, trading days).
import { _, fmt, api, LiveStream, throttle, money, setLive, el } from "./common.js";

const cards = () => Array.from(document.querySelectorAll("[data-challenge]"));
const ids = cards().map((c) => Number(c.dataset.challenge));
const WORDS = { active: () => _("Active"), passed: () => _("Passed"), failed: () => _("Failed") };

async function reload() {
  const data = await api("GET", "/challenges?limit=100");
  const list = Array.isArray(data) ? data : data.results || [];
  const known = new Set(ids);
  if (list.some((c) => !known.has(c.id))) {
    window.location.reload(); // a challenge opened elsewhere: render it server-side
    return;
  }
  for (const c of list) {
    const card = document.querySelector(`[data-challenge="${c.id}"]`);
    if (!card) continue;
    const badge = card.querySelector('[data-role="status"]');
    badge.className = `badge badge-${c.status}`;
    badge.textContent = (WORDS[c.status] || (() => c.status))();
    setLive(card.querySelector('[data-role="balance"]'), money(c.balance));
    setLive(card.querySelector('[data-role="equity"]'), money(c.equity));
    if (c.trading_days !== undefined && c.min_trading_days !== undefined) {
      card.querySelector('[data-role="days"]').textContent = `${c.trading_days} / ${c.min_trading_days}`;
    }
  }
}

// Purchases still being charged: each links to its progress on the plans page.
const OPEN = new Set(["pending", "processing", "needs_review"]);
async function loadPurchases() {
  const page = await api("GET", "/purchases?limit=10");
  const open = ((page && page.results) || []).filter((p) => OPEN.has(p.status));
  const box = document.getElementById("open-purchases");
  box.hidden = !open.length;
  document.getElementById("open-purchases-list").replaceChildren(
    ...open.map((p) =>
      el("li", {},
        el("a", { href: `/plans/?purchase=${p.id}` }, fmt(_("Purchase #%(id)s"), { id: p.id })),
        el("span", { text: p.status === "needs_review" ? _("Being confirmed") : _("Charging") }),
      ),
    ),
  );
}

const refresh = throttle(async () => {
  await Promise.allSettled([reload(), loadPurchases()]);
}, 1000);
new LiveStream({
  challenges: ids,
  onFrame: (f) => {
    if (f.type === "purchase.updated" || ids.includes(f.challenge)) refresh();
  },
  onResync: () => Promise.all([reload(), loadPurchases()]),
}).start();
