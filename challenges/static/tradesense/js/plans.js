// Plans: buy a plan (payment method), then follow the purchase until its challenge opens.
// The purchase is charged by a background worker; this page polls GET /purchases/{id}
// and also listens for purchase.updated frames, whichever comes first.
import { _, fmt, api, ApiError, LiveStream, createWithRetry, newKey, el, sleep, money } from "./common.js";

const $ = (id) => document.getElementById(id);
const dialog = $("buy-dialog");
const form = $("buy-form");
let plan = null;
let purchaseKey = null;
let watching = null;

const STATUS_WORDS = {
  pending: () => _("Waiting for the processor"),
  processing: () => _("Charging"),
  succeeded: () => _("Paid"),
  failed: () => _("Payment failed"),
  needs_review: () => _("Being confirmed"),
};

document.querySelectorAll("button.buy").forEach((b) =>
  b.addEventListener("click", () => {
    plan = b.dataset.plan;
    purchaseKey = newKey(); // one key per purchase attempt: a double click buys once
    $("buy-title").textContent = fmt(_("Buy %(name)s"), { name: b.dataset.name });
    $("buy-price").textContent = fmt(_("You pay %(price)s once. Your challenge opens as soon as the payment is confirmed."), { price: b.dataset.price });
    $("buy-error").hidden = true;
    form.querySelectorAll("[data-error-for]").forEach((p) => (p.textContent = ""));
    $("buy-submit").disabled = false;
    if (dialog.showModal) dialog.showModal();
    else dialog.setAttribute("open", "");
  }),
);
$("buy-cancel").addEventListener("click", () => dialog.close());

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const submit = $("buy-submit");
  submit.disabled = true;
  $("buy-error").hidden = true;
  const body = {
    plan,
    payment_method: form.querySelector('input[name="payment_method"]:checked').value,
    payment_token: $("payment_token").value,
  };
  try {
    const purchase = await createWithRetry("/purchases", body, { key: purchaseKey });
    dialog.close();
    history.replaceState(null, "", `?purchase=${purchase.id}`);
    watch(purchase.id, purchase);
  } catch (e) {
    const box = $("buy-error");
    box.textContent = e.message;
    box.hidden = false;
    for (const [field, problems] of Object.entries((e instanceof ApiError && e.fields) || {})) {
      const slot = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
      if (slot) slot.textContent = [].concat(problems).join(" ");
    }
    submit.disabled = false;
  }
});

function setStep(name, state) {
  const li = document.querySelector(`#purchase-steps li[data-step="${name}"]`);
  if (li) li.dataset.state = state;
}

function renderPurchase(p) {
  const box = $("purchase-progress");
  box.hidden = false;
  box.dataset.status = p.status;
  const button = document.querySelector(`button.buy[data-plan="${CSS.escape(String(p.plan))}"]`);
  const amount = p.amount ? ` · ${money(p.amount)} ${p.currency || ""}` : "";
  $("purchase-title").textContent = fmt(_("Purchase #%(id)s · %(plan)s"), { id: p.id, plan: button ? button.dataset.name : p.plan }) + amount;
  const badge = $("purchase-status");
  badge.textContent = (STATUS_WORDS[p.status] || (() => p.status))();
  badge.className = `badge ${p.status === "succeeded" ? "badge-passed" : p.status === "failed" ? "badge-failed" : "badge-active"}`;
  const note = $("purchase-note");
  note.hidden = true;
  note.className = "alert alert-info";
  setStep("recorded", "done");
  if (p.status === "pending" || p.status === "processing") {
    setStep("charging", "current");
    setStep("paid", "");
    setStep("open", "");
  } else if (p.status === "needs_review") {
    setStep("charging", "current");
    note.textContent = _("The processor has not confirmed this payment yet. We are checking with it; you will never be charged twice. This page updates by itself.");
    note.hidden = false;
  } else if (p.status === "failed") {
    setStep("charging", "failed");
    setStep("paid", "");
    setStep("open", "");
    note.className = "alert alert-error";
    note.replaceChildren(
      el("strong", { text: _("The payment did not go through.") }),
      el("span", { text: p.failure_reason || _("The processor declined it.") }),
      el("div", { text: _("Nothing was charged. You can try again with another payment method.") }),
    );
    note.hidden = false;
  } else if (p.status === "succeeded") {
    setStep("charging", "done");
    setStep("paid", "done");
    setStep("open", p.challenge ? "done" : "current");
  }
  const actions = $("purchase-actions");
  if (p.status === "succeeded" && p.challenge) {
    const link = $("purchase-open");
    link.href = `/challenges/${p.challenge}/`;
    actions.hidden = false;
    note.className = "alert alert-ok";
    note.textContent = _("Your challenge is open. Good trading!");
    note.hidden = false;
  } else {
    actions.hidden = true;
  }
}

async function watch(id, first) {
  watching = id;
  if (first) renderPurchase(first);
  let delay = 700;
  const started = Date.now();
  while (watching === id) {
    try {
      const p = await api("GET", `/purchases/${id}`);
      renderPurchase(p);
      if (p.status === "failed") return;
      if (p.status === "succeeded" && p.challenge) {
        await sleep(1500);
        if (watching === id) window.location.assign(`/challenges/${p.challenge}/`);
        return;
      }
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        $("purchase-progress").hidden = true;
        return;
      }
    }
    await Promise.race([sleep(delay), nudge.wait()]);
    // Poll briskly at first, then settle: a purchase waiting on a processor outage
    // can take minutes and needs no more than a look every few seconds.
    if (Date.now() - started > 20000) delay = Math.min(5000, delay * 1.5);
  }
}

// A purchase.updated frame wakes the poll loop at once.
const nudge = {
  resolvers: [],
  wait() {
    return new Promise((r) => this.resolvers.push(r));
  },
  fire() {
    const rs = this.resolvers;
    this.resolvers = [];
    rs.forEach((r) => r());
  },
};

new LiveStream({
  onFrame: (f) => {
    if (f.type === "purchase.updated") nudge.fire();
  },
  onResync: async () => nudge.fire(),
}).start();

// A purchase still on its way (the trader left the page, or reloaded it) is picked up
// again: the one named in the address, else the newest unfinished one.
const OPEN = new Set(["pending", "processing", "needs_review"]);
const resume = new URLSearchParams(location.search).get("purchase");
if (resume && /^\d+$/.test(resume)) {
  watch(Number(resume));
} else {
  api("GET", "/purchases?limit=5")
    .then((page) => {
      const open = ((page && page.results) || []).find((p) => OPEN.has(p.status));
      if (open && watching === null) watch(open.id, open);
    })
    .catch(() => {});
}
