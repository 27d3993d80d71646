// The equity curve as inline SVG, drawn at the container's real pixel size (so text is
// never stretched), with the profit target and both loss floors as dashed levels.
import { _, money, toDate } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";
const MAX_POINTS = 600;

function s(tag, attrs = {}, text) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

function niceStep(range, target) {
  const raw = range / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

export class EquityChart {
  constructor(container) {
    this.box = container;
    this.empty = container.querySelector(".chart-empty");
    this.points = []; // [{t: ms, e: Number}] -- Number is fine for drawing only
    this.levels = {};
    this.scheduled = false;
    if (window.ResizeObserver) new ResizeObserver(() => this.draw()).observe(container);
  }

  setHistory(history) {
    const ts = (history && history.timestamp) || [];
    const eq = (history && history.equity) || [];
    const pts = [];
    for (let i = 0; i < Math.min(ts.length, eq.length); i++) {
      const d = toDate(ts[i]);
      if (d && eq[i] !== null && eq[i] !== undefined) pts.push({ t: d.getTime(), e: Number(eq[i]) });
    }
    pts.sort((a, b) => a.t - b.t);
    // Keep live points newer than the history's last one.
    const lastT = pts.length ? pts[pts.length - 1].t : 0;
    this.points = pts.concat(this.points.filter((p) => p.t > lastT));
    this.trim();
    this.redraw();
  }

  addPoint(at, equity) {
    if (equity === null || equity === undefined) return;
    const t = (toDate(at) || new Date()).getTime();
    const e = Number(equity);
    const last = this.points[this.points.length - 1];
    if (last && t <= last.t) {
      if (t === last.t || last.e === e) return;
    }
    this.points.push({ t: Math.max(t, last ? last.t : t), e });
    this.trim();
    this.redraw();
  }

  setLevels(levels) {
    this.levels = levels;
    this.redraw();
  }

  trim() {
    if (this.points.length <= MAX_POINTS) return;
    // Thin the oldest half evenly; the recent past keeps full detail.
    const keepTail = Math.floor(MAX_POINTS / 2);
    const head = this.points.slice(0, this.points.length - keepTail);
    const step = Math.ceil(head.length / (MAX_POINTS - keepTail));
    const thinned = head.filter((_p, i) => i % step === 0);
    this.points = thinned.concat(this.points.slice(this.points.length - keepTail));
  }

  redraw() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.draw();
    });
  }

  draw() {
    const W = this.box.clientWidth;
    const H = this.box.clientHeight;
    if (!W || !H) return;
    const old = this.box.querySelector("svg");
    if (old) old.remove();
    const pts = this.points.slice();
    if (!pts.length) {
      if (this.empty) {
        this.empty.hidden = false;
        this.empty.textContent = _("No equity history yet.");
      }
      return;
    }
    if (this.empty) this.empty.hidden = true;
    if (pts.length === 1) pts.unshift({ t: pts[0].t - 60000, e: pts[0].e });
    const now = Date.now();
    if (pts[pts.length - 1].t < now) pts.push({ t: now, e: pts[pts.length - 1].e });

    const levels = [
      { key: "target", v: this.levels.target, cls: "lvl-target", label: _("Target") },
      { key: "daily", v: this.levels.daily, cls: "lvl-daily", label: _("Daily floor") },
      { key: "max", v: this.levels.max, cls: "lvl-max", label: _("Max loss floor") },
    ].filter((l) => l.v !== null && l.v !== undefined && !Number.isNaN(Number(l.v)));

    let lo = Math.min(...pts.map((p) => p.e), ...levels.map((l) => Number(l.v)));
    let hi = Math.max(...pts.map((p) => p.e), ...levels.map((l) => Number(l.v)));
    if (hi === lo) {
      hi += 1;
      lo -= 1;
    }
    const padV = (hi - lo) * 0.08;
    lo -= padV;
    hi += padV;
    const t0 = pts[0].t;
    const t1 = Math.max(pts[pts.length - 1].t, t0 + 1);

    const rtl = document.documentElement.dir === "rtl";
    const left = 8;
    const right = 74; // room for the y labels
    const top = 10;
    const bottom = 24;
    const plotW = W - left - right;
    const plotH = H - top - bottom;
    const x = (t) => {
      const f = (t - t0) / (t1 - t0);
      return left + (rtl ? 1 - f : f) * plotW;
    };
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * plotH;

    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, "aria-hidden": "true" });

    // y grid and labels
    const step = niceStep(hi - lo, 4);
    for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) {
      svg.append(s("line", { class: "axis", x1: left, x2: left + plotW, y1: y(v), y2: y(v) }));
      svg.append(s("text", { class: "tick", x: left + plotW + 6, y: y(v) + 4 }, money(v.toFixed(2)).replace(/\.00$/, "")));
    }
    // x labels: start, middle, end
    const span = t1 - t0;
    const timeFmt =
      span > 36 * 3600e3
        ? { month: "short", day: "numeric" }
        : span < 15 * 60e3
          ? { hour: "2-digit", minute: "2-digit", second: "2-digit" }
          : { hour: "2-digit", minute: "2-digit" };
    for (const f of [0, 0.5, 1]) {
      const t = t0 + f * span;
      const anchor = f === 0 ? (rtl ? "end" : "start") : f === 1 ? (rtl ? "start" : "end") : "middle";
      svg.append(
        s("text", { class: "tick", x: x(t), y: H - 6, "text-anchor": anchor }, new Date(t).toLocaleString(document.documentElement.lang, timeFmt)),
      );
    }

    // area + line
    const path = pts.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.e).toFixed(1)}`).join("");
    const base = y(lo);
    svg.append(s("path", { class: "eq-area", d: `${path}L${x(pts[pts.length - 1].t).toFixed(1)},${base}L${x(pts[0].t).toFixed(1)},${base}Z` }));
    svg.append(s("path", { class: "eq", d: path }));

    // levels on top so they stay visible
    for (const l of levels) {
      const yy = y(Number(l.v));
      svg.append(s("line", { class: `lvl ${l.cls}`, x1: left, x2: left + plotW, y1: yy, y2: yy, "data-level": l.key }));
      svg.append(
        s(
          "text",
          { class: `lvl-label`, x: rtl ? left + plotW - 4 : left + 4, y: yy - 4, fill: `var(--${l.key === "max" ? "maxloss" : l.key})`, "text-anchor": rtl ? "end" : "start" },
          `${l.label} ${money(l.v)}`,
        ),
      );
    }
    const lastP = pts[pts.length - 1];
    svg.append(s("circle", { class: "dot", cx: x(lastP.t), cy: y(lastP.e), r: 4 }));
    this.box.append(svg);
  }
}
