// The explorable backprop page: draws the graph the library laid out and steps through it.
(() => {
  const { data, fmt, el, svg, clear } = DK;
  const nodes = new Map(data.nodes.map((n) => [n.id, n]));
  const edges = data.edges;
  const F = data.steps.forward;
  const B = data.steps.backward;
  const M = data.methods;
  const names = data.gradient.map((g) => g.name);
  const W = 130;
  const H = 46;
  const OPS = { add: "+", sub: "\u2212", mul: "\u00d7", div: "\u00f7", neg: "\u2212x",
                max: "max", exp: "exp", log: "log", integer_pow: "pow", pow: "pow" };
  const state = { method: "tape", step: 0, selected: null, timer: null };
  const $ = (id) => document.getElementById(id);
  const val = (a) => (a === null ? "?" : a.length === 1 ? fmt(a[0]) : `[${a.length} values]`);
  const opText = (n) => (n.op === "input" ? "input" : OPS[n.op] ? `${n.op}` : n.op);
  const argText = (n) =>
    n.args.map((a) => ("node" in a ? a.node : a.const)).join(", ");
  const signature = (n) => (n.op === "input" ? n.id : `${n.id} = ${n.op}(${argText(n)})`);
  const consumers = new Map(data.nodes.map((n) => [n.id, []]));
  for (const e of edges) consumers.get(e.from).push(e);

  // ----------------------------------------------------------------- steps
  function stepList() {
    if (state.method === "tape") {
      return [{ phase: "start" }, ...F.map((id) => ({ phase: "forward", id })),
              ...B.map((id) => ({ phase: "backward", id })), { phase: "done" }];
    }
    if (state.method === "dual" && M.dual.passes) {
      const list = [];
      M.dual.passes.forEach((_, pass) => {
        list.push({ phase: "seed", pass });
        for (const id of F) list.push({ phase: "forward", id, pass });
      });
      list.push({ phase: "done", pass: M.dual.passes.length - 1 });
      return list;
    }
    return [{ phase: "start" }, ...F.map((id) => ({ phase: "forward", id })), { phase: "done" }];
  }

  function derive() {
    const list = stepList();
    const view = { computed: new Set(), processed: new Set(), pass: 0, current: null,
                   step: list[state.step], total: list.length, passesDone: 0 };
    for (let i = 0; i <= state.step; i++) {
      const s = list[i];
      if (s.phase === "seed") { view.computed.clear(); view.pass = s.pass; view.passesDone = s.pass; }
      if (s.phase === "forward") view.computed.add(s.id);
      if (s.phase === "backward") view.processed.add(s.id);
      if (s.phase === "done") {
        F.forEach((id) => view.computed.add(id));
        if (state.method === "tape") B.forEach((id) => view.processed.add(id));
        view.passesDone = state.method === "dual" && M.dual.passes ? M.dual.passes.length : 1;
      }
    }
    if (view.step.id !== undefined) view.current = view.step.id;
    return view;
  }

  // The adjoint a node shows: final once its own pullback ran or all its users' did,
  // else the sum its processed users passed so far.
  function adjoint(n, view) {
    if (n.adjoint === null) return null;
    if (view.processed.has(n.id)) return { value: n.adjoint, done: true };
    const flows = consumers.get(n.id).filter((e) => e.passed !== null);
    const got = flows.filter((e) => view.processed.has(e.to));
    if (!got.length) return null;
    if (got.length === flows.length) return { value: n.adjoint, done: true };
    const sum = got.reduce((s, e) => s + e.passed[0], 0);
    return { value: [sum], done: false, of: `${got.length}/${flows.length}` };
  }

  function tangent(n, view) {
    if (state.method !== "dual" || !M.dual.passes) return null;
    if (n.op !== "input" && !view.computed.has(n.id)) return null;
    const t = M.dual.passes[view.pass].tangents[n.id];
    return Array.isArray(t) ? t : [t];
  }

  // ------------------------------------------------------------------ graph
  const graph = $("graph");
  const maxX = Math.max(...data.nodes.map((n) => n.x)) + W / 2 + 12;
  const maxY = Math.max(...data.nodes.map((n) => n.y)) + H / 2 + 12;
  graph.setAttribute("viewBox", `0 0 ${maxX} ${maxY}`);
  graph.setAttribute("width", maxX);
  graph.setAttribute("height", maxY);
  const edgeLayer = svg("g", { class: "edges" });
  const nodeLayer = svg("g", { class: "nodes" });
  graph.append(edgeLayer, nodeLayer);
  const mag = (a) => (a ? Math.max(0, ...a.map(Math.abs)) : 0); // |largest entry|
  const maxPassed = Math.max(1e-300, ...edges.map((e) => mag(e.passed)));
  const maxAdj = Math.max(1e-300, ...data.nodes.map((n) => mag(n.adjoint)));

  const edgeViews = edges.map((e, i) => {
    const a = nodes.get(e.from);
    const b = nodes.get(e.to);
    const x1 = a.x, y1 = a.y + H / 2, x2 = b.x + ((e.slot % 3) - 1) * 14, y2 = b.y - H / 2;
    const dy = Math.max(20, (y2 - y1) / 2);
    const d = `M${x1},${y1} C${x1},${y1 + dy} ${x2},${y2 - dy} ${x2},${y2}`;
    const label = `Edge from ${e.from} to ${e.to}`;
    const g = svg("g", { class: "edge", tabindex: 0, role: "button", "aria-label": label,
                         "data-from": e.from, "data-to": e.to, "data-index": i },
      svg("path", { class: "hit", d }), svg("path", { class: "line", d }),
      svg("text", { x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2, class: "flow" }));
    const pick = () => { state.selected = i; render(); };
    g.addEventListener("click", pick);
    g.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); pick(); }
    });
    edgeLayer.append(g);
    return g;
  });

  const nodeViews = new Map();
  for (const n of data.nodes) {
    const cls = ["node", n.op === "input" ? "input" : "", n.id === data.output.id ? "output" : "",
                 n.flags.length ? "flag" : ""].join(" ");
    const title = svg("title", { text: [signature(n), ...n.flags].join("\n") });
    const lines = [0, 1, 2].map((k) =>
      svg("text", { x: n.x - W / 2 + 7, y: n.y - H / 2 + 14 + 13 * k,
                    class: ["head", "val", "adj"][k] }));
    const rect = svg("rect", { x: n.x - W / 2, y: n.y - H / 2, width: W, height: H, rx: 7 });
    const g = svg("g", { class: cls, "data-id": n.id }, title, rect, ...lines,
      n.flags.length ? svg("text", { class: "badge", x: n.x + W / 2 - 14, y: n.y - H / 2 + 14,
                                     text: "\u26a0" }) : null);
    const head = n.op === "input" ? n.id : `${n.id} = ${opText(n)}`;
    lines[0].textContent = head.length > 17 ? `${head.slice(0, 16)}\u2026` : head; // full: title
    nodeLayer.append(g);
    nodeViews.set(n.id, { g, rect, lines });
  }

  // --------------------------------------------------------------- controls
  const range = $("step");
  const methodNames = { tape: "tape (reverse, 1 pass)", dual: "dual (forward, n passes)",
                        symbolic: "symbolic", fd: "fd (finite differences)" };
  for (const m of Object.keys(methodNames)) {
    const input = el("input", { type: "radio", name: "method", id: `method-${m}`, value: m,
                                checked: m === state.method });
    input.addEventListener("change", () => setMethod(m));
    const note = M[m] && M[m].error ? " (unavailable)" : "";
    $("methods").append(el("label", { for: `method-${m}` }, input, " " + methodNames[m] + note));
  }
  function setMethod(m) {
    state.method = m;
    state.step = 0;
    stop();
    render();
  }
  const go = (s) => { state.step = Math.max(0, Math.min(s, stepList().length - 1)); render(); };
  $("first").addEventListener("click", () => go(0));
  $("prev").addEventListener("click", () => go(state.step - 1));
  $("next").addEventListener("click", () => go(state.step + 1));
  $("last").addEventListener("click", () => go(Infinity));
  range.addEventListener("input", () => go(Number(range.value)));
  function stop() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
    $("play").setAttribute("aria-pressed", "false");
    $("play").setAttribute("aria-label", "Play");
    $("play").textContent = "\u25b6 Play";
  }
  $("play").addEventListener("click", () => {
    if (state.timer) return stop();
    if (state.step >= stepList().length - 1) go(0);
    $("play").setAttribute("aria-pressed", "true");
    $("play").setAttribute("aria-label", "Pause");
    $("play").textContent = "\u23f8 Pause";
    state.timer = setInterval(() => {
      if (state.step >= stepList().length - 1) return stop();
      go(state.step + 1);
    }, 450);
  });

  // ----------------------------------------------------------------- render
  function describe(view) {
    const s = view.step;
    const n = s.id !== undefined ? nodes.get(s.id) : null;
    const pass = state.method === "dual" && M.dual.passes
      ? `Pass ${view.pass + 1} of ${M.dual.passes.length} (direction ${M.dual.passes[view.pass].direction}): ` : "";
    if (s.phase === "start") return "Start: the inputs are set; nothing computed yet.";
    if (s.phase === "seed")
      return pass + `seed tangent 1 on ${M.dual.passes[s.pass].direction}, 0 on the other inputs.`;
    if (s.phase === "forward") {
      const t = tangent(n, view);
      return pass + `forward: ${signature(n)} = ${val(n.value)}` + (t ? `, tangent ${val(t)}` : "");
    }
    if (s.phase === "backward") {
      const outs = consumers.get(n.id).length === 0 && n.id === data.output.id ? " (seed: \u2202loss/\u2202loss = 1)" : "";
      const to = edges.filter((e) => e.to === n.id && e.passed !== null)
        .map((e) => `${fmt(e.passed[0])} \u2192 ${e.from}`).join(", ");
      return `backward: ${n.id} has adjoint ${val(n.adjoint)}${outs}; passes on ${to || "nothing"}.`;
    }
    if (state.method === "dual" && M.dual.passes)
      return `Done: ${M.dual.passes.length} forward passes, one partial each.`;
    if (state.method === "tape")
      return `Done: one forward and one backward pass gave all ${names.length} partials; loss = ${fmt(data.output.value)}.`;
    return `Done: loss = ${fmt(data.output.value)}.`;
  }

  function render() {
    const view = derive();
    range.max = String(view.total - 1);
    range.value = String(state.step);
    $("step-number").textContent = `${state.step} of ${view.total - 1}`;
    $("status").textContent = describe(view);
    for (const n of data.nodes) {
      const { g, rect, lines } = nodeViews.get(n.id);
      const shown = n.op === "input" || view.computed.has(n.id);
      lines[1].textContent = `value ${shown ? val(n.value) : "?"}`;
      g.classList.toggle("current", view.current === n.id);
      const t = tangent(n, view);
      const a = state.method === "tape" ? adjoint(n, view) : null;
      lines[2].setAttribute("class", t ? "tan" : "adj");
      lines[2].textContent = t ? `tangent ${val(t)}`
        : a ? `adjoint ${val(a.value)}${a.done ? "" : ` (${a.of})`}` : "";
      const strength = a && a.done ? mag(a.value) / maxAdj : 0;
      rect.style.fill = strength ? `rgba(124, 58, 237, ${0.06 + 0.4 * strength})` : "";
    }
    edges.forEach((e, i) => {
      const g = edgeViews[i];
      const back = state.method === "tape" && e.passed !== null && view.processed.has(e.to);
      const active = view.current === e.to;
      g.classList.toggle("back", back);
      g.classList.toggle("active", active);
      g.classList.toggle("selected", state.selected === i);
      const line = g.querySelector("path.line");
      line.style.strokeWidth = back ? 1.4 + 5 * mag(e.passed) / maxPassed : "";
      const flow = g.querySelector("text.flow");
      flow.textContent = back && (active || state.selected === i) ? fmt(e.passed[0], 4) : "";
    });
    $("loss").textContent = `loss = ${fmt(data.output.value)}`;
    renderMethod(view);
    renderEdge(view);
  }

  function renderMethod(view) {
    const box = clear($("method-view"));
    const m = state.method;
    box.append(el("h2", { text: methodNames[m] }));
    if (M[m] && M[m].error) {
      box.append(el("p", { class: "error", text: `Not available for this function: ${M[m].error}` }));
      return;
    }
    const counter = el("p", { id: "pass-counter" });
    box.append(counter);
    if (m === "tape") {
      counter.textContent = `Passes: 1 forward + 1 backward, for all ${names.length} partials.`;
      box.append(el("p", { class: "hint", text: "Each node's adjoint is the sum of what its users pass back: their adjoint times the local derivative on the edge." }));
    } else if (m === "dual") {
      counter.textContent = `Pass ${view.pass + 1} of ${M.dual.passes.length} (one forward pass per input direction); ${view.passesDone} done.`;
      const rows = M.dual.passes.map((p, i) =>
        el("tr", {}, el("td", { text: p.direction }),
           el("td", { text: i < view.passesDone || (i === view.pass && view.computed.has(data.output.id)) ? fmt(p.output) : "" })));
      box.append(el("table", { class: "numbers", id: "dual-table" },
        el("caption", { text: "Output tangent of each pass = one partial" }),
        el("tr", {}, el("th", { scope: "col", text: "direction" }), el("th", { scope: "col", text: "\u2202loss/\u2202input" })), rows));
    } else if (m === "symbolic") {
      counter.textContent = `One compiled program gives all ${names.length} partials.`;
      box.append(el("p", {}, "loss = ", el("code", { text: M.symbolic.output })));
      for (const p of M.symbolic.partials) {
        box.append(el("div", { class: "partial" },
          el("strong", { text: `\u2202loss/\u2202${p.name} = ${fmt(p.value)}` }),
          el("pre", { text: p.expr })));
      }
    } else if (m === "fd") {
      counter.textContent = `${M.fd.evaluations} evaluations of the function (${M.fd.scheme}).`;
      const head = el("tr", {}, ...["input", "estimate", "error bound", "|fd \u2212 tape|"]
        .map((h) => el("th", { scope: "col", text: h })));
      const rows = M.fd.rows.map((r, i) => el("tr", {}, el("td", { text: names[i] }),
        el("td", { text: fmt(r.estimate) }), el("td", { text: fmt(r.bound, 2) }),
        el("td", { text: fmt(r.error, 2) })));
      box.append(el("div", { class: "scroll" }, el("table", { class: "numbers", id: "fd-table" }, head, rows)));
    }
    const flagged = data.nodes.filter((n) => n.flags.length);
    if (flagged.length) {
      box.append(el("h2", { text: "Flags" }),
        el("ul", { id: "flags" }, flagged.map((n) => el("li", { text: `${n.id}: ${n.flags.join("; ")}` }))));
    }
  }

  function renderEdge(view) {
    const box = clear($("edge-view"));
    box.append(el("h2", { text: "Edge" }));
    if (state.selected === null) {
      box.append(el("p", { class: "hint", text: "Click an edge (or focus it and press Enter)." }));
      return;
    }
    const e = edges[state.selected];
    const to = nodes.get(e.to);
    const lines = [`From ${e.from} into ${signature(to)}.`];
    if (e.local === null) lines.push("Local derivative: a Jacobian (the node is not a scalar).");
    else lines.push(`Local derivative \u2202${e.to}/\u2202${e.from} = ${fmt(e.local)}`);
    if (e.passed !== null) {
      lines.push(`Adjoint of ${e.to}: ${val(to.adjoint)}`);
      lines.push(`Passes on: ${val(to.adjoint)} \u00d7 ${fmt(e.local)} = ${fmt(e.passed[0])} \u2192 ${e.from}`);
    } else {
      lines.push("No adjoint flows here: the loss does not depend on this node.");
    }
    const t = tangent(nodes.get(e.from), view);
    if (t && e.local !== null) lines.push(`Forward (dual): local \u00d7 tangent of ${e.from} = ${fmt(e.local * t[0])}`);
    box.append(el("ul", { id: "edge-lines" }, lines.map((s) => el("li", { text: s }))));
  }

  // -------------------------------------------------------------- tables
  $("title").textContent = `Backpropagation through ${data.title}`;
  $("summary").textContent = `loss = ${fmt(data.output.value)} at ` +
    data.gradient.map((g) => `${g.name} = ${fmt(g.value)}`).join(", ") + ` (${data.dtype})`;
  const gradHead = el("tr", {}, ...["parameter", "value", "gradient \u2202loss/\u2202parameter"]
    .map((h) => el("th", { scope: "col", text: h })));
  $("gradient").append(el("caption", { id: "loss" }), gradHead,
    ...data.gradient.map((g) => el("tr", { "data-name": g.name }, el("td", { text: g.name }),
      el("td", { text: fmt(g.value) }), el("td", { class: "grad", text: fmt(g.grad) }))));
  const allHead = el("tr", {}, el("th", { scope: "col", text: "method" }),
    el("th", { scope: "col", text: "mode" }), el("th", { scope: "col", text: "passes" }),
    names.map((n) => el("th", { scope: "col", text: n })));
  $("all-methods").append(allHead, ...M.all.map((r) => el("tr", { "data-method": r.method },
    el("td", { text: r.method }), el("td", { text: r.mode }), el("td", { text: r.passes }),
    r.error ? el("td", { colspan: names.length, class: "error", text: r.error })
      : r.grad.map((g) => el("td", { text: fmt(g) })))));
  document.addEventListener("keydown", (ev) => {
    if (ev.target !== document.body) return;
    if (ev.key === "ArrowRight") go(state.step + 1);
    if (ev.key === "ArrowLeft") go(state.step - 1);
  });
  render();
  window.diffkitReady = true;
})();
