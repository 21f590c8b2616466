// The results report: heat map, charts and filters over the records the library wrote.
(() => {
  const { data, fmt, el, svg, clear } = DK;
  const $ = (id) => document.getElementById(id);
  const records = data.records;
  const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                   "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];
  const uniq = (xs) => [...new Set(xs)];
  const methods = uniq(records.map((r) => r.method)).sort();
  const colour = new Map(methods.map((m, i) => [m, (data.colours || {})[m] || PALETTE[i % PALETTE.length]]));
  const FILTERS = { dtype: "dtype", backend: "backend", method: "method" };
  const state = {};
  for (const key of Object.keys(FILTERS)) state[key] = new Set(records.map((r) => r[key]));

  const fmtTime = (t) => {
    if (t === null || t === undefined) return "-";
    for (const [unit, s] of [["s", 1], ["ms", 1e-3], ["us", 1e-6]])
      if (t >= s) return `${fmt(t / s, 3)} ${unit}`;
    return `${fmt(t / 1e-9, 3)} ns`;
  };
  // As the CLI's tables: three digits, whole numbers with thin-space thousands from 1000.
  const ratioText = (r) => (r < 1000 ? fmt(r, 3)
    : String(Math.round(Number(r.toPrecision(3)))).replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009")) + "x";

  // ---------------------------------------------------------------- filters
  function filters() {
    const box = $("filters");
    for (const [key, legend] of Object.entries(FILTERS)) {
      const values = uniq(records.map((r) => r[key])).sort();
      const set = el("fieldset", { id: `filter-${key}` }, el("legend", { text: legend }));
      for (const v of values) {
        const id = `f-${key}-${v}`.replace(/[^A-Za-z0-9_-]/g, "_");
        const input = el("input", { type: "checkbox", id, checked: true, value: v });
        input.addEventListener("change", () => {
          if (input.checked) state[key].add(v); else state[key].delete(v);
          render();
        });
        set.append(el("label", { for: id }, input, " " + v));
      }
      box.append(set);
    }
  }
  const shown = () => records.filter((r) => Object.keys(FILTERS).every((k) => state[k].has(r[k])));

  // --------------------------------------------------------------- heat map
  function heat(recs) {
    const table = clear($("heat"));
    const several = (k) => uniq(recs.map((r) => r[k])).length > 1;
    const colKey = (r) => JSON.stringify([r.problem, r.size, r.dtype, r.backend]);
    const cols = uniq(recs.sort((a, b) => (a.problem < b.problem ? -1 : a.problem > b.problem ? 1
      : (a.size || 0) - (b.size || 0))).map(colKey));
    const rows = uniq(recs.map((r) => r.method)).sort();
    const byCell = new Map(recs.map((r) => [r.method + "|" + colKey(r), r]));
    const okRatios = recs.filter((r) => r.outcome === "ok" && r.ratio > 0).map((r) => r.ratio);
    const top = Math.log10(Math.max(10, ...okRatios));
    table.append(el("caption", { text: "derivative time / function time (lower is cheaper)" }));
    table.append(el("tr", {}, el("th", { scope: "col", text: "method" }), cols.map((c) => {
      const [p, size, dtype, backend] = JSON.parse(c);
      const r = recs.find((x) => colKey(x) === c);
      const extra = [several("dtype") ? dtype : null, several("backend") ? backend : null]
        .filter(Boolean).join(", ");
      return el("th", { scope: "col" }, p, el("br"), `n=${r.n ?? size}` + (r.m > 1 ? ` m=${r.m}` : ""),
        extra ? el("br") : null, extra || null);
    })));
    for (const m of rows) {
      table.append(el("tr", {}, el("th", { scope: "row", text: m }), cols.map((c) => {
        const r = byCell.get(m + "|" + c);
        if (!r) return el("td", { class: "absent", text: "\u2013", title: "not measured" });
        const i = records.indexOf(r);
        const common = { tabindex: 0, "data-index": i, "data-method": m, "data-problem": r.problem,
                         "data-size": r.size, onclick: () => show(r), onkeydown: (ev) => {
                           if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); show(r); } } };
        if (r.outcome !== "ok" || !(r.ratio > 0)) {
          const why = `${r.outcome}${r.message ? ": " + r.message : ""}`;
          return el("td", { ...common, class: "cell failed", title: why,
                            "aria-label": `${m}, ${r.problem} n=${r.n ?? r.size}: ${why}`,
                            text: r.outcome });
        }
        const t = Math.min(1, Math.max(0, Math.log10(r.ratio) / top));
        const bg = `hsl(${48 - 46 * t}, 95%, ${92 - 45 * t}%)`;
        const acc = r.accurate === false ? " (outside the tolerance)" : "";
        return el("td", { ...common, class: "cell", style: `background:${bg}`,
                          title: `${m} on ${r.problem} n=${r.n}: ${ratioText(r.ratio)} the function's time${acc}`,
                          "aria-label": `${m}, ${r.problem} n=${r.n}: ratio ${ratioText(r.ratio)}${acc}`,
                          text: ratioText(r.ratio) + (r.accurate === false ? " !" : "") });
      })));
    }
  }

  // ----------------------------------------------------------------- charts
  function scale(values, a, b) {
    let lo = Math.log10(Math.min(...values));
    let hi = Math.log10(Math.max(...values));
    if (hi - lo < 0.3) { lo -= 0.3; hi += 0.3; }
    const pad = (hi - lo) * 0.06;
    lo -= pad; hi += pad;
    const f = (v) => a + ((Math.log10(v) - lo) / (hi - lo)) * (b - a);
    f.ticks = () => {
      const out = [];
      for (let e = Math.ceil(lo); e <= Math.floor(hi); e++) out.push(10 ** e);
      if (out.length < 2) {
        for (let e = Math.floor(lo); e <= Math.ceil(hi); e++)
          for (const k of [2, 5]) if (Math.log10(k * 10 ** e) > lo && Math.log10(k * 10 ** e) < hi) out.push(k * 10 ** e);
      }
      return out.sort((x, y) => x - y);
    };
    return f;
  }

  function chart(title, recs, xKey, yKey, yText, lines) {
    const Wd = 380, Ht = 240, L = 62, R = 10, T = 10, Bm = 40;
    const pts = recs.filter((r) => r.outcome === "ok" && r[xKey] > 0 && r[yKey] !== null && r[yKey] !== undefined)
      .map((r) => ({ r, x: r[xKey], y: Math.max(r[yKey], 1e-17) }));
    const fig = el("figure", { class: "chart" }, el("figcaption", { text: title }));
    if (!pts.length) { fig.append(el("p", { class: "hint", text: "no finished case" })); return fig; }
    const lineYs = lines.flatMap((l) => l.points.map((p) => p[1]));
    const lineXs = lines.flatMap((l) => l.points.map((p) => p[0]));
    const sx = scale([...pts.map((p) => p.x), ...lineXs], L, Wd - R);
    const sy = scale([...pts.map((p) => p.y), ...lineYs], Ht - Bm, T);
    const s = svg("svg", { viewBox: `0 0 ${Wd} ${Ht}`, width: "100%", role: "img",
                           "aria-label": `${title}: ${pts.length} points, log axes` });
    const grid = svg("g", { class: "grid" });
    const axis = svg("g", { class: "axis" });
    for (const t of sx.ticks()) {
      grid.append(svg("line", { x1: sx(t), x2: sx(t), y1: T, y2: Ht - Bm }));
      axis.append(svg("text", { x: sx(t), y: Ht - Bm + 14, "text-anchor": "middle", text: fmt(t, 2) }));
    }
    for (const t of sy.ticks()) {
      grid.append(svg("line", { x1: L, x2: Wd - R, y1: sy(t), y2: sy(t) }));
      axis.append(svg("text", { x: L - 4, y: sy(t) + 4, "text-anchor": "end",
                                text: yKey === "time_median" ? fmtTime(t) : fmt(t, 2) }));
    }
    axis.append(svg("line", { x1: L, x2: Wd - R, y1: Ht - Bm, y2: Ht - Bm }),
                svg("line", { x1: L, x2: L, y1: T, y2: Ht - Bm }),
                svg("text", { x: (L + Wd - R) / 2, y: Ht - 6, "text-anchor": "middle", text: xKey }),
                svg("text", { x: 12, y: (T + Ht - Bm) / 2, "text-anchor": "middle",
                              transform: `rotate(-90 12 ${(T + Ht - Bm) / 2})`, text: yText }));
    s.append(grid, axis);
    for (const l of lines) {
      const [[x0, y0], [x1, y1]] = l.points;
      s.append(svg("line", { x1: sx(x0), y1: sy(y0), x2: sx(x1), y2: sy(y1), stroke: colour.get(l.method),
                             "stroke-dasharray": "6 4", "stroke-width": 1.5, class: "fit" },
                   svg("title", { text: `${l.method}: fitted slope ${fmt(l.slope, 3)}` })));
    }
    for (const m of uniq(pts.map((p) => p.r.method))) {
      const mine = pts.filter((p) => p.r.method === m).sort((a, b) => a.x - b.x);
      if (mine.length > 1)
        s.append(svg("polyline", { fill: "none", stroke: colour.get(m), "stroke-width": 1, opacity: 0.5,
                                   points: mine.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ") }));
      for (const p of mine) {
        const label = `${m}, ${p.r.problem} ${xKey}=${p.x}: ${yText} ${yKey === "time_median" ? fmtTime(p.y) : fmt(p.y, 3)}`;
        const c = svg("circle", { cx: sx(p.x), cy: sy(p.y), r: 4.5, fill: colour.get(m), tabindex: 0,
                                  role: "button", "aria-label": label, "data-index": records.indexOf(p.r) },
                      svg("title", { text: label }));
        c.addEventListener("click", () => show(p.r));
        c.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); show(p.r); } });
        s.append(c);
      }
    }
    const slopes = new Map(lines.map((l) => [l.method, l.slope]));
    fig.append(s, el("div", { class: "legend" }, uniq(pts.map((p) => p.r.method)).map((m) =>
      el("span", { style: `--c:${colour.get(m)}`, text: m + (slopes.has(m) ? ` (slope ${fmt(slopes.get(m), 2)})` : "") }))));
    return fig;
  }

  function charts(recs) {
    const box = clear($("charts"));
    const groups = uniq(recs.map((r) => JSON.stringify([r.problem, r.dtype, r.backend])));
    for (const g of groups.sort()) {
      const [problem, dtype, backend] = JSON.parse(g);
      const mine = recs.filter((r) => r.problem === problem && r.dtype === dtype && r.backend === backend);
      const varies = (k) => uniq(mine.map((r) => r[k])).length > 1;
      const xKey = varies("n") ? "n" : varies("m") ? "m" : varies("size") ? "size" : "n";
      const fits = data.fits.filter((f) => f.problem === problem && f.dtype === dtype && f.backend === backend
        && f.against === xKey && state.method.has(f.method) && f.slope_time !== null);
      const lines = (key, slope) => fits.map((f) => ({ method: f.method, slope: f[slope], points: f[`line_${key}`] }));
      const section = el("section", { class: "problem", "data-problem": problem },
        el("h3", { text: `${problem} (${dtype}, ${backend})` }));
      const row = el("div", { class: "charts" },
        chart("time of the derivative", mine, xKey, "time_median", "time", lines("time_median", "slope_time")),
        chart("ratio to the function's time", mine, xKey, "ratio", "ratio", lines("ratio", "slope_ratio")),
        chart("accuracy (rho max vs float64)", mine, xKey, "rho_max", "rho max", []));
      section.append(row);
      box.append(section);
    }
  }

  // --------------------------------------------------------------- patterns
  // Each +sparse problem's pattern drawn small (blocks of the (m, n) matrix, darker with
  // more nonzeros), with the colours each method needed and what they saved.
  function patterns() {
    const pats = data.patterns || [];
    if (!pats.length) return;
    $("patterns-section").hidden = false;
    const box = clear($("patterns"));
    for (const p of pats) {
      const [m, n] = p.shape, [gr, gc] = p.grid;
      const W = 240, H = Math.max(60, Math.min(360, Math.round(W * m / n)));
      const top = Math.max(...p.cells.map((c) => c[2]));
      const density = 100 * p.nnz / (m * n);
      const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img", class: "pattern",
                             "aria-label": `${p.problem}: ${m} x ${n} Jacobian pattern, ${p.nnz} nonzeros` },
                    svg("rect", { x: 0, y: 0, width: W, height: H, fill: "none", stroke: "#888" }));
      for (const [i, j, k] of p.cells)
        s.append(svg("rect", { x: (j * W) / gc, y: (i * H) / gr, width: W / gc, height: H / gr,
                               fill: "#1f3b73", opacity: 0.25 + 0.75 * (k / top) }));
      const colours = p.methods.map((e) =>
        `${e.method}: ${e.colours} ${e.mode === "rev" ? "row" : "column"} colours` +
        (!e.speedup ? "" : e.speedup >= 1 ? `, ${ratioText(e.speedup)} faster than dense`
          : `, ${ratioText(1 / e.speedup)} slower than dense`));
      box.append(el("figure", { class: "chart", "data-problem": p.problem },
        el("figcaption", { text: `${p.problem}, n=${n}, m=${m}: ${p.nnz} nonzeros (${fmt(density, 2)}%)` }),
        s, el("ul", { class: "hint" }, colours.map((t) => el("li", { text: t })))));
    }
  }

  // ---------------------------------------------------------------- records
  function show(r) {
    const box = clear($("record"));
    const { command, backend, ...rest } = r;
    box.append(el("p", {}, el("strong", { text: `${r.method} on ${r.problem} n=${r.n ?? r.size} (${r.dtype}, ${backend}): ${r.outcome}` })),
      el("p", { text: "Measure it again:" }), el("pre", { id: "command", text: command }),
      el("details", {}, el("summary", { text: "the record" }),
         el("pre", { id: "record-json", text: JSON.stringify(rest, null, 1) })));
  }

  function render() {
    const recs = shown();
    heat(recs);
    charts(recs);
  }

  $("title").textContent = `diffkit report: ${data.title}`;
  const failed = records.filter((r) => r.outcome !== "ok").length;
  $("summary").textContent = `${records.length} cases, ${failed} not finished; ` +
    `${uniq(records.map((r) => r.problem)).length} problems, ${methods.length} methods.`;
  filters();
  render();
  patterns();
  window.diffkitRenderMs = performance.now();
  window.diffkitReady = true;
})();
