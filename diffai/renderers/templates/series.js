// diffai audit's series page (after page.js, in the same function): the whole model's
// drift and step as lines, each layer's drift as a heatmap, the checkpoints as a table.
  const ICONS = { pass: "✅", warn: "⚠️", fail: "❌" };
  const LINES = [["drift from the first", "#0969da"], ["step from the one before", "#bc4c00"]];

  function header() {
    $("verdict").textContent = ICONS[data.verdict] + " diffai audit: " + data.verdict;
    $("summary").textContent = data.checkpoints.length + 1 + " checkpoints in natural order, from " +
      data.first + "; policy " + data.policy + ". The verdict is the worst step's: drift from " +
      "the first is what training is for and does not gate.";
    $("footer").textContent = "diffai " + data.version +
      " · every number measured from the tensors · this page is self-contained and fetches nothing";
  }

  // Checkpoints 2.. on x, relative change from zero on y; an unmeasured point breaks its line.
  function lines() {
    const box = $("lines");
    const values = data.checkpoints.map((c) => [c[2], c[1]]);
    const measured = values.flat().filter((v) => v !== null);
    if (!measured.length) { box.textContent = "Nothing measured."; return; }
    const width = Math.max(300, box.clientWidth || 740);
    const left = 56, right = 16, height = 200, top = 10;
    const ceiling = niceCeiling(Math.max(...measured)) || 1;
    const x = (i) => left + (values.length === 1 ? 0 : i * (width - left - right) / (values.length - 1));
    const y = (v) => top + height * (1 - v / ceiling);
    const chart = svg("svg", { width: width, height: height + 70, role: "img" });
    chart.appendChild(svg("title", {}, "relative change over the checkpoints"));
    [0, 0.5, 1].forEach((f) => {
      chart.appendChild(svg("line", { x1: left, x2: width - right, y1: y(ceiling * f), y2: y(ceiling * f), stroke: "#d1d9e0" }));
      chart.appendChild(svg("text", { x: left - 6, y: y(ceiling * f) + 4, "text-anchor": "end" }, pct(ceiling * f)));
    });
    LINES.forEach(([label, stroke], k) => {
      const path = values.map((v, i) => v[k] === null ? "" :
        (i && values[i - 1][k] !== null ? "L" : "M") + x(i).toFixed(1) + " " + y(v[k]).toFixed(1)).join("");
      chart.appendChild(svg("path", { d: path, fill: "none", stroke: stroke, "stroke-width": 2 }));
      values.forEach((v, i) => {
        if (v[k] === null) return;
        const dot = svg("circle", { cx: x(i), cy: y(v[k]), r: 4, fill: stroke, class: "point" });
        const text = "checkpoint " + (i + 2) + ", " + label + ": " + pct(v[k]);
        dot.appendChild(svg("title", {}, text));
        dot.addEventListener("mouseenter", () => { $("readout").textContent = text; });
        chart.appendChild(dot);
      });
      chart.appendChild(svg("rect", { x: left + k * 220, y: height + 48, width: 12, height: 10, fill: stroke }));
      chart.appendChild(svg("text", { x: left + k * 220 + 16, y: height + 57 }, label));
    });
    const every = Math.max(1, Math.ceil(values.length / 20));
    values.forEach((_, i) => {
      if (i % every === 0) chart.appendChild(svg("text", { x: x(i), y: top + height + 16, "text-anchor": "middle", class: "tick" }, String(i + 2)));
    });
    chart.appendChild(svg("text", { x: left, y: top + height + 32 }, "checkpoint →"));
    box.appendChild(chart);
  }

  // Rows are layers (most drifted at the last checkpoint first), columns checkpoints 2...
  function heatmap() {
    const box = $("heatmap");
    const rows = data.layers;
    const shown = rows.length + " of " + data.layer_count + " layers";
    $("heatmap-note").textContent = shown + ", the most drifted from the first at the last " +
      "checkpoint first; each cell is the layer's drift at that checkpoint.";
    if (!rows.length) { box.textContent = "No layer was measured."; return; }
    const count = data.checkpoints.length;
    const label = Math.min(320, 12 + 7 * Math.max(...rows.map((r) => r.length)));
    const width = Math.max(300, box.clientWidth || 740);
    const cell = Math.max(6, Math.min(40, Math.floor((width - label - 8) / count)));
    const height = 22;
    const chart = svg("svg", { width: label + cell * count + 8, height: rows.length * height + 80, role: "img" });
    chart.appendChild(svg("title", {}, "drift per layer heatmap"));
    rows.forEach((name, r) => {
      chart.appendChild(svg("text", { x: label - 6, y: r * height + 15, "text-anchor": "end" }, name.length > 44 ? "…" + name.slice(-43) : name));
      data.cells[r].forEach((value, c) => {
        const rect = svg("rect", { x: label + c * cell, y: r * height, width: cell - 1, height: height - 2, class: "cell", fill: value === null ? "#eeeeee" : colour(value) });
        const text = name + " at checkpoint " + (c + 2) + ": " + (value === null ? "not measured" : "drift " + pct(value));
        rect.appendChild(svg("title", {}, text));
        rect.addEventListener("mouseenter", () => { $("readout").textContent = text; });
        chart.appendChild(rect);
      });
    });
    const axisY = rows.length * height + 12;
    const every = [1, 2, 4, 5, 10, 20, 50, 100].find((s) => s * cell >= 26) || 100;
    for (let c = 0; c < count; c += every) {
      chart.appendChild(svg("text", { x: label + c * cell + cell / 2, y: axisY, "text-anchor": "middle", class: "tick" }, String(c + 2)));
    }
    chart.appendChild(svg("text", { x: label, y: axisY + 16 }, "checkpoint →"));
    legend(chart, label, axisY + 24);
    box.appendChild(chart);
  }

  function checkpoints() {
    const body = $("checkpoints").tBodies[0];
    data.checkpoints.forEach((c, i) => {
      const tr = el("tr");
      const cells = [String(i + 2), pct(c[1]), pct(c[2]), ICONS[c[3]] + " " + c[3],
        c[4] === null ? "n/a" : c[4].toFixed(2), String(c[5]), c[0]];
      cells.forEach((text) => tr.appendChild(el("td", {}, text)));
      body.appendChild(tr);
    });
  }

  header();
  lines();
  heatmap();
  checkpoints();
  document.body.dataset.ready = "1";
