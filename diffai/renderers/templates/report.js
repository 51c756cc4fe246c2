// diffai's HTML report (after page.js, in the same function). Charts are hand-written
// SVG: two simple charts do not justify a plotting library.
  const ROW = 26;

  function header() {
    const icons = { pass: "✅", warn: "⚠️", fail: "❌" };
    $("verdict").textContent = icons[data.verdict] + " diffai: " + data.verdict;
    $("why").textContent = data.why;
    $("summary").textContent = data.summary + ". Readiness " + data.readiness.toFixed(2) +
      " (" + data.risk + " risk); policy " + data.policy + ".";
    $("names").textContent = data.names.map((sentence) => "Names: " + sentence + ".").join(" ");
    $("footer").textContent = "diffai " + data.version +
      " · every number measured from the tensors · this page is self-contained and fetches nothing";
  }

  // Heatmap: rows are components (or layers), columns are blocks.
  function heatmap() {
    const box = $("heatmap");
    const grid = data.grid;
    let rows, cols, cellAt, describe;
    if (grid) {
      rows = grid.components;
      cols = grid.blocks.map(String);
      cellAt = (r, c) => grid.cells[r * cols.length + c];
      describe = (r, c) => "block " + cols[c] + " · " + rows[r];
      const outside = grid.outside.map((o) => o[0] + " " + (o[2] ? "‼️ NaN/Inf" : pct(o[1])));
      $("heatmap-note").textContent = grid.blocks.length + " blocks of " + grid.stack +
        "; each cell is the largest relative change of a tensor of that component in that block." +
        (outside.length ? " Outside the blocks: " + outside.join(" · ") + "." : "");
    } else {
      rows = data.layers.map((layer) => layer[0]);
      cols = ["relative change"];
      cellAt = (r) => [data.layers[r][1], 0, rows[r], null];
      describe = (r) => "layer " + rows[r];
      $("heatmap-note").textContent = "No repeated blocks: the most-changed layers, by name.";
    }
    if (!rows.length) { box.textContent = "Nothing measured."; return; }
    const label = grid ? 84 : Math.min(320, 12 + 7 * Math.max(...rows.map((r) => r.length)));
    const width = Math.max(300, box.clientWidth || 740);
    const cell = Math.max(6, Math.min(40, Math.floor((width - label - 8) / cols.length)));
    const height = 22;
    const top = 4;
    const chart = svg("svg", { width: label + cell * cols.length + 8, height: top + rows.length * height + 70, role: "img" });
    chart.appendChild(svg("title", {}, "relative change heatmap"));
    rows.forEach((name, r) => {
      chart.appendChild(svg("text", { x: label - 6, y: top + r * height + 15, "text-anchor": "end" }, name.length > 44 ? "…" + name.slice(-43) : name));
      cols.forEach((_, c) => {
        const value = cellAt(r, c);
        const attrs = { x: label + c * cell, y: top + r * height, width: cell - 1, height: height - 2, class: "cell", "data-row": r, "data-col": c };
        attrs.fill = !value ? "#eeeeee" : value[1] ? NAN_COLOUR : value[0] === null ? "#cccccc" : colour(value[0]);
        const rect = svg("rect", attrs);
        const text = !value ? describe(r, c) + ": no tensor" : describe(r, c) + ": " +
          (value[1] ? "gained NaN/Inf" : "largest relative change " + pct(value[0])) +
          (value[2] ? " (" + value[2] + ")" : "") + (value[3] ? ", " + value[3] + " tensors" : "");
        rect.appendChild(svg("title", {}, text));
        rect.addEventListener("mouseenter", () => { $("readout").textContent = text; });
        chart.appendChild(rect);
      });
    });
    const axisY = top + rows.length * height + 12;
    const step = [1, 2, 4, 5, 8, 10, 16, 20, 25, 50, 100].find((s) => s * cell >= 26) || 100;
    if (grid) {
      cols.forEach((name, c) => {
        if (c % step === 0) chart.appendChild(svg("text", { x: label + c * cell + cell / 2, y: axisY, "text-anchor": "middle", class: "tick" }, name));
      });
      chart.appendChild(svg("text", { x: label, y: axisY + 16 }, "block index →"));
    }
    legend(chart, label, axisY + 24);
    box.appendChild(chart);
  }

  function histogram() {
    const h = data.histogram;
    const box = $("histogram");
    const width = Math.max(300, box.clientWidth || 740);
    const left = 48, right = 30, bottom = 40, height = 180;
    const bar = (width - left - right) / h.counts.length;
    const top = niceCeiling(Math.max(1, ...h.counts));
    const chart = svg("svg", { width: width, height: height + bottom + 10, role: "img" });
    chart.appendChild(svg("title", {}, "histogram of per-tensor relative change"));
    [0, 0.5, 1].forEach((f) => {
      const y = 10 + height * (1 - f);
      chart.appendChild(svg("line", { x1: left, x2: width - right, y1: y, y2: y, stroke: "#d1d9e0" }));
      chart.appendChild(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, String(top * f)));
    });
    h.counts.forEach((count, i) => {
      const tall = height * count / top;
      const rect = svg("rect", { x: left + i * bar, y: 10 + height - tall, width: Math.max(1, bar - 1), height: tall, fill: colour(h.edges[i + 1]), class: "bar" });
      const text = count + " tensors changed by " + pct(h.edges[i]) + " to " + pct(h.edges[i + 1]);
      rect.appendChild(svg("title", {}, text));
      rect.addEventListener("mouseenter", () => { $("readout").textContent = text; });
      chart.appendChild(rect);
    });
    h.edges.forEach((edge, i) => {
      if (i % 4 === 0) chart.appendChild(svg("text", { x: left + i * bar, y: 10 + height + 16, "text-anchor": "middle" }, String(Number((edge * 100).toPrecision(1))) + "%"));
    });
    chart.appendChild(svg("text", { x: left, y: 10 + height + 34 }, "relative change (log scale) →; y: tensors, from 0. " +
      h.zero + " unchanged, " + h.unmeasured + " without a measure (added, removed, reshaped)."));
    box.appendChild(chart);
  }

  // The tensor table: only the rows in view are in the DOM.
  const T = data.tensors;
  T.name = [];
  for (let i = 0, previous = ""; i < T.names.length; i += 2) {
    previous = previous.slice(0, T.names[i]) + T.names[i + 1];
    T.name.push(previous);
  }
  T.shape = T.shape.map((i) => T.shapes[i]);
  T.dtype = T.dtype.map((i) => T.dtypes[i]);
  const COLUMNS = [
    { key: "name", label: "tensor" },
    { key: "status", label: "status" },
    { key: "change", label: "relative change", num: true, show: pct },
    { key: "cosine", label: "cosine", num: true, show: (v) => num(v, 6) },
    { key: "max_abs", label: "max |Δ|", num: true, show: (v) => num(v, 4) },
    { key: "shape", label: "shape" },
    { key: "dtype", label: "dtype" },
  ];
  const STATUS_LABELS = { shape_changed: "reshaped", dtype_changed: "re-typed" };
  const statusText = (i) => (T.flag[i] ? "‼️ NaN/Inf" : STATUS_LABELS[data.statuses[T.status[i]]] || data.statuses[T.status[i]]);
  const state = { key: "change", descending: true, sorted: null, shown: null, query: "", status: "" };
  const lowered = T.name.map((name) => name.toLowerCase());

  // Numbers sort as a Float64Array of keys (missing values last either way), strings by
  // code unit: 100,000 rows in well under 300 ms.
  function sortBy(key, descending) {
    const n = T.name.length;
    const index = new Uint32Array(n);
    for (let i = 0; i < n; i++) index[i] = i;
    const column = T[key];
    if (typeof column[0] === "string") {
      const direction = descending ? -1 : 1;
      index.sort((a, b) => direction * (column[a] < column[b] ? -1 : column[a] > column[b] ? 1 : 0) || a - b);
    } else {
      const missing = descending ? -Infinity : Infinity;
      const keys = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        keys[i] = key === "status" ? (T.flag[i] ? -1 : column[i]) : column[i] === null ? missing : column[i];
      }
      index.sort(descending ? (a, b) => keys[b] - keys[a] || a - b : (a, b) => keys[a] - keys[b] || a - b);
    }
    state.sorted = index;
  }

  function filter() {
    const query = state.query;
    const status = state.status;
    state.shown = state.sorted.filter((i) =>
      (!query || lowered[i].includes(query)) &&
      (!status || (status === "flag" ? T.flag[i] === 1 : data.statuses[T.status[i]] === status)));
    $("count").textContent = state.shown.length.toLocaleString("en") + " of " + T.name.length.toLocaleString("en") + " tensors";
    $("spacer").style.height = state.shown.length * ROW + "px";
    $("viewport").scrollTop = 0;
    paint();
  }

  const pool = [];
  function paint() {
    const viewport = $("viewport");
    const first = Math.floor(viewport.scrollTop / ROW);
    const count = Math.ceil(viewport.clientHeight / ROW) + 4;
    while (pool.length < count) {
      const row = el("div", { class: "row", role: "row" });
      COLUMNS.forEach((c) => row.appendChild(el("span", { class: c.num ? "num" : "", role: "cell" })));
      $("spacer").appendChild(row);
      pool.push(row);
    }
    pool.forEach((row, k) => {
      const position = first + k;
      const i = state.shown[position];
      row.hidden = i === undefined;
      if (i === undefined) return;
      row.style.top = position * ROW + "px";
      row.classList.toggle("flag", T.flag[i] === 1);
      row.dataset.index = String(i);
      COLUMNS.forEach((c, n) => {
        const cell = row.children[n];
        const value = c.key === "status" ? statusText(i) : c.show ? c.show(T[c.key][i]) : T[c.key][i];
        cell.textContent = value;
        if (n === 0) cell.title = value;
      });
    });
  }

  function table() {
    const head = $("table-head");
    COLUMNS.forEach((c) => {
      const button = el("button", { class: c.num ? "num" : "", role: "columnheader", "data-key": c.key }, c.label);
      button.addEventListener("click", () => {
        state.descending = state.key === c.key ? !state.descending : c.num === true;
        state.key = c.key;
        head.querySelectorAll("button").forEach((b) => b.removeAttribute("aria-sort"));
        button.setAttribute("aria-sort", state.descending ? "descending" : "ascending");
        sortBy(state.key, state.descending);
        filter();
      });
      head.appendChild(button);
    });
    head.querySelector('[data-key="change"]').setAttribute("aria-sort", "descending");
    const select = $("status-filter");
    const present = new Set(T.status);
    if (T.flag.includes(1)) select.appendChild(el("option", { value: "flag" }, "gained NaN/Inf"));
    data.statuses.forEach((s, i) => { if (present.has(i)) select.appendChild(el("option", { value: s }, STATUS_LABELS[s] || s)); });
    select.addEventListener("change", () => { state.status = select.value; filter(); });
    $("filter").addEventListener("input", (event) => { state.query = event.target.value.toLowerCase(); filter(); });
    $("viewport").addEventListener("scroll", () => requestAnimationFrame(paint), { passive: true });
    sortBy(state.key, state.descending);
    filter();
  }

  function rows(body, cellsList) {
    cellsList.forEach((cells) => {
      const tr = el("tr");
      cells.forEach((text, i) => tr.appendChild(el(i === 0 && body.id === "models-body" ? "th" : "td", {}, text)));
      body.appendChild(tr);
    });
  }

  function checks() {
    rows($("checks").tBodies[0], data.checks.map((c) => [c[0], c[1], c[2], c[4], c[5], c[6]]));
  }

  function adapter() {
    if (!data.adapter) return;
    $("adapter-section").hidden = false;
    $("adapter-heading").textContent = data.adapter.heading;
    rows($("adapter").tBodies[0], data.adapter.rows);
  }

  function analyses() {
    const list = $("analyses");
    data.analyses.forEach(([key, line]) => { list.appendChild(el("dt", {}, key)); list.appendChild(el("dd", {}, line)); });
  }

  function models() {
    const [base, cand] = data.models;
    const body = $("models").tBodies[0];
    body.id = "models-body";
    const facts = ["path", "format", "bytes", "tensors", "parameters"].map((k) => [k, String(base[k]), String(cand[k])]);
    const keys = Array.from(new Set(Object.keys(base.metadata).concat(Object.keys(cand.metadata))));
    const metadata = keys.map((k) => ["metadata: " + k, String(base.metadata[k] ?? "—"), String(cand.metadata[k] ?? "—")]);
    const scalars = data.scalars.map((s) => ["scalar: " + s[0], s[1], s[2]]);
    rows(body, [["", "baseline", "candidate"], ...facts, ...metadata, ...scalars]);
  }

  const started = performance.now();
  header();
  heatmap();
  histogram();
  table();
  adapter();
  checks();
  analyses();
  models();
  document.body.dataset.ready = String(Math.round(performance.now() - started));
  document.body.dataset.readyAt = String(Math.round(performance.now()));  // since navigation
