// Shared by diffai's self-contained pages (report.js, series.js): element builders, number
// formats and the colour scale. Every untrusted string (names, paths, metadata, messages)
// reaches a page through textContent or setAttribute only, never innerHTML.
// html_report.self_contained_page wraps this file and the page's own script in one strict function.
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const data = JSON.parse($("diffai-data").textContent);

  function make(namespace, tag, attrs, text) {
    const node = namespace ? document.createElementNS(namespace, tag) : document.createElement(tag);
    for (const key in attrs || {}) node.setAttribute(key, String(attrs[key]));
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  const el = (tag, attrs, text) => make(null, tag, attrs, text);
  const svg = (tag, attrs, text) => make(SVG, tag, attrs, text);

  function pct(value) {
    if (value === null || value === undefined) return "n/a";
    const p = value * 100;
    if (p === 0) return "0%";
    if (p < 0.01) return "<0.01%";
    return (p < 100 ? String(Number(p.toPrecision(3))) : Math.round(p).toLocaleString("en")) + "%";
  }
  const num = (value, digits) => (value === null ? "" : String(Number(value.toPrecision(digits))));

  // A sequential scale over log10(relative change) from 0.1% to 100%.
  const STOPS = [[255, 247, 236], [253, 212, 158], [252, 141, 89], [215, 48, 31], [127, 0, 0]];
  function colour(value) {
    if (value === 0) return "#ffffff";
    const t = Math.min(1, Math.max(0, (Math.log10(value) + 3) / 3)) * (STOPS.length - 1);
    const i = Math.min(STOPS.length - 2, Math.floor(t));
    const f = t - i;
    const mix = STOPS[i].map((c, k) => Math.round(c + (STOPS[i + 1][k] - c) * f));
    return "rgb(" + mix.join(",") + ")";
  }
  const NAN_COLOUR = "#8250df";

  function legend(chart, x, y) {
    const defs = svg("defs");
    const gradient = svg("linearGradient", { id: "scale" });
    STOPS.forEach((c, i) => gradient.appendChild(svg("stop", { offset: i / (STOPS.length - 1), "stop-color": "rgb(" + c.join(",") + ")" })));
    defs.appendChild(gradient);
    chart.appendChild(defs);
    chart.appendChild(svg("rect", { x: x, y: y, width: 200, height: 10, fill: "url(#scale)" }));
    ["≤0.1%", "1%", "10%", "≥100%"].forEach((t, i) => chart.appendChild(svg("text", { x: x + i * 200 / 3, y: y + 22, "text-anchor": "middle" }, t)));
    chart.appendChild(svg("rect", { x: x + 236, y: y, width: 12, height: 10, fill: NAN_COLOUR }));
    chart.appendChild(svg("text", { x: x + 252, y: y + 9 }, "gained NaN/Inf"));
    chart.appendChild(svg("rect", { x: x + 360, y: y, width: 12, height: 10, fill: "#eeeeee" }));
    chart.appendChild(svg("text", { x: x + 376, y: y + 9 }, "no tensor"));
  }

  function niceCeiling(value) {
    if (value <= 0) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(value)));
    return [1, 2, 5, 10].map((s) => s * power).find((v) => v >= value);
  }

