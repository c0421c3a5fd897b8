// A small SVG line chart: several series over a shared x axis, with ticks and a legend.
"use strict";

const Plot = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"];
  const W = 420, H = 220, L = 52, R = 12, T = 26, B = 30;

  function svg(tag, attrs, text) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    if (text !== undefined) n.textContent = text;
    return n;
  }

  // "nice" tick values (1, 2, 2.5, 5 x 10^k apart), at most n + 1 intervals across [lo, hi]
  function ticks(lo, hi, n) {
    if (lo === hi) { lo -= 1; hi += 1; }
    const mag = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => (hi - lo) / s <= n + 1);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(12));
    return out;
  }

  function label(v) {
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return String(+v.toPrecision(4));
  }

  // series: [{name, points: [[x, y], ...]}]; returns an <svg> element.
  function lineChart(title, series, xlabel) {
    const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p[1]));
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
    root.append(svg("text", { x: L, y: 16, class: "chart-title" }, title));
    if (!all.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" }, "no data yet"));
      return root;
    }
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    for (const v of ticks(y0, y1, 4)) {
      root.append(svg("line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }));
      root.append(svg("text", { x: L - 4, y: sy(v) + 4, "text-anchor": "end", class: "tick" }, label(v)));
    }
    for (const v of ticks(x0, x1, 5)) {
      root.append(svg("text", { x: sx(v), y: H - B + 14, "text-anchor": "middle", class: "tick" }, label(v)));
    }
    root.append(svg("text", { x: W - R, y: H - 4, "text-anchor": "end", class: "tick" }, xlabel || "step"));
    series.forEach((s, i) => {
      const pts = s.points.filter((p) => Number.isFinite(p[1]));
      const color = COLORS[i % COLORS.length];
      if (pts.length > 1) {
        const d = pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
        root.append(svg("polyline", { points: d, fill: "none", stroke: color, "stroke-width": 1.6 }));
      }
      if (pts.length < 40) {
        for (const p of pts) root.append(svg("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.2, fill: color }));
      }
    });
    if (series.length > 1) {  // the legend last, over the lines, on a light box
      root.append(svg("rect", { x: W - R - 124, y: T - 6, width: 122, height: series.length * 13 + 4,
        fill: "#fff", "fill-opacity": 0.85 }));
      series.forEach((s, i) => {
        const y = T + 4 + i * 13;
        root.append(svg("rect", { x: W - R - 120, y: y - 8, width: 9, height: 9, fill: COLORS[i % COLORS.length] }));
        root.append(svg("text", { x: W - R - 107, y, class: "legend" }, s.name));
      });
    }
    return root;
  }

  return { lineChart };
})();
