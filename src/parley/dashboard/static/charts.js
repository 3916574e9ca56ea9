// Small SVG charts: a line per series, stacked bars, horizontal bars. No dependencies.
"use strict";

const PALETTE = ["#3659e3", "#f79009", "#12b76a", "#ee46bc", "#7a5af8", "#06aed4", "#f04438", "#667085", "#84cc16", "#a15c07"];
const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

function legend(names) {
  const box = document.createElement("div");
  box.className = "legend";
  names.forEach((name, i) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${PALETTE[i % PALETTE.length]}"></i>`;
    item.append(name);
    box.append(item);
  });
  return box;
}

function frame(labels, maxValue, width, height) {
  const pad = { left: 40, right: 10, top: 10, bottom: 24 };
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
  const top = maxValue > 0 ? maxValue : 1;
  for (const frac of [0, 0.5, 1]) {
    const y = pad.top + plotH * (1 - frac);
    svg.append(svgEl("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, stroke: "#e4e7ec" }));
    svg.append(svgEl("text", { x: pad.left - 4, y: y + 3, "text-anchor": "end" }, formatNumber(top * frac)));
  }
  const step = Math.max(1, Math.ceil(labels.length / 8));
  labels.forEach((label, i) => {
    if (i % step) return;
    const x = pad.left + (labels.length === 1 ? plotW / 2 : (plotW * i) / (labels.length - 1));
    svg.append(svgEl("text", { x, y: height - 6, "text-anchor": "middle" }, shortLabel(label)));
  });
  return { svg, pad, plotW, plotH, top };
}

function shortLabel(label) {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}))?/.exec(label);
  if (!m) return label;
  return m[4] !== undefined && m[4] + m[5] !== "0000" ? `${m[2]}-${m[3]} ${m[4]}:${m[5]}` : `${m[2]}-${m[3]}`;
}

function formatNumber(n) {
  return Number.isInteger(n) ? n.toLocaleString("en-US") : n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

function lineChart(container, labels, series) {
  const names = Object.keys(series);
  const max = Math.max(0, ...names.flatMap((n) => series[n]));
  const { svg, pad, plotW, plotH, top } = frame(labels, max, 900, 260);
  names.forEach((name, s) => {
    const points = series[name].map((v, i) => {
      const x = pad.left + (labels.length === 1 ? plotW / 2 : (plotW * i) / (labels.length - 1));
      return [x, pad.top + plotH * (1 - v / top)];
    });
    const path = svgEl("polyline", {
      points: points.map((p) => p.join(",")).join(" "),
      fill: "none", stroke: PALETTE[s % PALETTE.length], "stroke-width": 2,
      "data-series": name, "data-total": series[name].reduce((a, b) => a + b, 0),
    });
    path.append(svgEl("title", {}, name));
    svg.append(path);
  });
  container.replaceChildren(svg, legend(names));
}

function stackedBars(container, labels, series) {
  const names = Object.keys(series);
  const totals = labels.map((_, i) => names.reduce((sum, n) => sum + series[n][i], 0));
  const { svg, pad, plotW, plotH, top } = frame(labels, Math.max(0, ...totals), 600, 240);
  const slot = plotW / Math.max(labels.length, 1);
  labels.forEach((label, i) => {
    let y = pad.top + plotH;
    names.forEach((name, s) => {
      const value = series[name][i];
      if (!value) return;
      const h = (plotH * value) / top;
      y -= h;
      const x = pad.left + slot * i + slot * 0.15;
      const rect = svgEl("rect", {
        x, y, width: Math.max(slot * 0.7, 1), height: h, fill: PALETTE[s % PALETTE.length],
        "data-series": name, "data-label": label, "data-value": value,
      });
      rect.append(svgEl("title", {}, `${label} ${name}: ${value}`));
      svg.append(rect);
    });
  });
  container.replaceChildren(svg, legend(names));
}

function hbars(container, items) {
  const max = Math.max(0, ...items.map((i) => i.value));
  const rowH = 22, width = 900, labelW = 180;
  const svg = svgEl("svg", { viewBox: `0 0 ${width} ${items.length * rowH + 4}`, role: "img" });
  items.forEach((item, i) => {
    const w = max ? ((width - labelW - 80) * item.value) / max : 0;
    svg.append(svgEl("text", { x: labelW - 6, y: i * rowH + 15, "text-anchor": "end" }, item.label));
    const rect = svgEl("rect", {
      x: labelW, y: i * rowH + 3, width: Math.max(w, 1), height: rowH - 6, fill: PALETTE[0],
      "data-label": item.label, "data-value": item.value,
    });
    rect.append(svgEl("title", {}, `${item.label}: ${item.value}`));
    svg.append(rect);
    svg.append(svgEl("text", { x: labelW + w + 6, y: i * rowH + 15 }, formatNumber(item.value)));
  });
  container.replaceChildren(svg);
}
