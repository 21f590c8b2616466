"use strict";
// Shared by every diffkit page: the inline data, number formatting, element builders.
const DK = (() => {
  const data = JSON.parse(document.getElementById("diffkit-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";

  // A number as Python's "{:.8g}" writes it (the CLI's tables use the same format).
  function fmt(x, digits = 8) {
    if (x === null || x === undefined) return "-";
    if (typeof x !== "number") return String(x);
    if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
    if (x === 0) return Object.is(x, -0) ? "-0" : "0";
    const [mant, exp] = x.toExponential(digits - 1).split("e");
    const e = Number(exp);
    const strip = (s) => (s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s);
    if (e < -4 || e >= digits) {
      const sign = e < 0 ? "-" : "+";
      return strip(mant) + "e" + sign + String(Math.abs(e)).padStart(2, "0");
    }
    return strip(x.toFixed(Math.max(0, digits - 1 - e)));
  }

  function build(make, tag, attrs, children) {
    const node = make(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }
  const el = (tag, attrs, ...children) =>
    build((t) => document.createElement(t), tag, attrs, children);
  const svg = (tag, attrs, ...children) =>
    build((t) => document.createElementNS(SVG, t), tag, attrs, children);
  const clear = (node) => {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  };
  return { data, fmt, el, svg, clear };
})();
