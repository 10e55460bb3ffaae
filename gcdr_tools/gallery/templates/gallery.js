// gcdr_tools/gallery/templates/gallery.js: the gallery page's script, inlined into index.html. It filters and
// paginates; every sort order comes computed from Python (D.orders: positions into D.persons).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("gallery-data").textContent);
  const C = D.columns, P = D.persons, orders = D.orders;
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmt = (v) => (v === null || v === undefined) ? "–" : v.toFixed(3);
  const filters = [["all", "all persons", () => true],
                   ["valid", "valid in every column", (p) => p.valid.every((v) => v)],
                   ["invalid", "invalid in any column", (p) => !p.valid.every((v) => v)]];
  C.forEach((c, i) => {
    const reasons = [...new Set(P.map((p) => p.reason[i]).filter((r) => r))].sort();
    reasons.forEach((r) => filters.push(["reason:" + i + ":" + r, c.name + ": " + r,
                                         (p) => p.reason[i] === r]));
  });
  if (P.some((p) => p.gt)) {
    filters.push(["target", "with in-frame GT", (p) => p.target]);
    filters.push(["oof", "GT out of frame", (p) => p.inout === 0]);
    filters.push(["nogt", "without GT", (p) => !p.gt]);
  }
  if (P.some((p) => p.image_error)) filters.push(["imgerr", "unreadable image", (p) => !!p.image_error]);

  const fill = (select, items, value) => {
    items.forEach(([k, label]) => { const o = el("option", "", label); o.value = k; select.appendChild(o); });
    select.value = value;
  };
  fill($("sort"), orders.map((o) => [o.key, o.label]), D.sort);
  fill($("filter"), filters, "all");
  [50, 100, 200, 500, 1000].concat([D.per_page]).filter((v, i, a) => a.indexOf(v) === i)
    .sort((a, b) => a - b).forEach((n) => {
      const o = el("option", "", String(n)); o.value = String(n); $("perpage").appendChild(o);
    });
  $("perpage").value = String(D.per_page);

  let view = P.slice(), page = 0;
  const perPage = () => parseInt($("perpage").value, 10);
  const pages = () => Math.max(1, Math.ceil(view.length / perPage()));

  function tileClass(p, i) {
    if (!p.valid[i]) return "v inv";
    const v = p.l2[i];
    if (v === null) return "v";
    return v < 0.1 ? "v ok" : v < 0.2 ? "v mid" : "v hi";
  }
  function figure(src, w, h, name, valueText, valueClass, title) {
    const f = el("figure");
    const img = el("img");
    img.loading = "lazy"; img.decoding = "async"; img.src = src; img.alt = name;
    img.width = w; img.height = h;
    if (title) img.title = title;
    f.appendChild(img);
    const cap = el("figcaption");
    cap.appendChild(el("span", "cn", name));
    cap.appendChild(el("span", valueClass, valueText));
    f.appendChild(cap);
    return f;
  }
  function card(p, rank) {
    const [w, h] = p.wh;
    const c = el("div", "card" + (p.valid.every((v) => v) ? "" : " invalid"));
    const width = (C.length + 1) * w + C.length * 6;
    c.style.setProperty("--w", String(width));
    c.style.setProperty("--tw", String(w)); c.style.setProperty("--th", String(h));
    const hd = el("div", "hd");
    hd.appendChild(el("span", "rank", "#" + (rank + 1)));
    if (p.name) {
      const name = el("span", "pname", p.name);
      name.style.background = p.colour;
      hd.appendChild(name);
    }
    const sid = el("span", "sid"); sid.appendChild(el("bdi", "", p.id)); sid.title = p.id + "\n" + p.image;
    hd.appendChild(sid);
    if (p.target) hd.appendChild(el("span", "badge gt", "GT"));
    else if (p.inout === 0) hd.appendChild(el("span", "badge oof", "GT out of frame"));
    else if (!p.gt && D.labels) hd.appendChild(el("span", "badge", "no GT"));
    if (p.image_error) hd.appendChild(el("span", "badge bad", "image unreadable"));
    c.appendChild(hd);
    if (p.others.length) {  // the other persons of this image, in their tile colours
      const others = el("div", "others", "also in this image:");
      p.others.forEach((o) => {
        const name = el("span", "pname", o.name);
        name.style.background = o.colour;
        others.appendChild(name);
      });
      c.appendChild(others);
    }
    const qa = el("div", "qa");
    qa.appendChild(el("span", "ans", p.answer ? "\u201c" + p.answer + "\u201d" : "(no answer)"));
    if (p.noun) qa.appendChild(el("span", "noun", p.noun));
    qa.title = p.answer + (p.noun ? "  [key noun: " + p.noun + "]" : "");
    c.appendChild(qa);
    const tiles = el("div", "tiles");
    const gtText = !D.labels ? "no labels" : p.target ? "GT" : p.inout === 0 ? "out of frame" : p.gt ? "" : "no GT";
    tiles.appendChild(figure(p.thumbs[0], w, h, "image", gtText, "v", p.image_error || p.image));
    C.forEach((col, i) => {
      const value = p.valid[i] ? (p.l2[i] === null ? "valid" : "L2 " + fmt(p.l2[i])) : "invalid: " + p.reason[i];
      const title = col.name + "\n" + (p.valid[i] ? "L2 " + fmt(p.l2[i]) + ", min L2 " + fmt(p.min_l2[i]) +
                                                    ", AUC " + fmt(p.auc[i]) : "invalid: " + p.reason[i]);
      tiles.appendChild(figure(p.thumbs[i + 1], w, h, (i + 1) + " " + col.name, value, tileClass(p, i), title));
    });
    c.appendChild(tiles);
    return c;
  }
  function render() {
    page = Math.min(page, pages() - 1);
    const grid = $("grid");
    const start = page * perPage(), stop = Math.min(view.length, start + perPage());
    const cards = view.slice(start, stop).map((p, k) => card(p, start + k));
    grid.replaceChildren(...cards);
    if (!cards.length) grid.appendChild(el("div", "empty", "No person matches this filter."));
    const text = view.length ? `${(start + 1).toLocaleString()}–${stop.toLocaleString()} of ` +
      `${view.length.toLocaleString()}` + (view.length < P.length ? ` (filtered from ${P.length.toLocaleString()})` : "")
      : `0 of ${P.length.toLocaleString()}`;
    document.querySelectorAll(".count").forEach((e) => { e.textContent = text; });
    document.querySelectorAll(".pageno").forEach((e) => { e.textContent = `page ${page + 1} / ${pages()}`; });
    document.querySelectorAll(".prev").forEach((b) => { b.disabled = page === 0; });
    document.querySelectorAll(".next").forEach((b) => { b.disabled = page >= pages() - 1; });
    saveState();
  }
  function saveState() {
    const state = new URLSearchParams({sort: $("sort").value, show: $("filter").value, q: $("search").value,
                                       per: $("perpage").value, page: String(page + 1)});
    history.replaceState(null, "", "#" + state.toString());
  }
  function loadState() {
    const state = new URLSearchParams(location.hash.slice(1));
    const set = (id, value) => {
      if (value !== null && [...$(id).options].some((o) => o.value === value)) $(id).value = value; };
    set("sort", state.get("sort")); set("filter", state.get("show")); set("perpage", state.get("per"));
    if (state.get("q")) $("search").value = state.get("q");
    return Math.max(0, (parseInt(state.get("page"), 10) || 1) - 1);
  }
  function update() {
    const f = filters.find((x) => x[0] === $("filter").value)[2];
    const q = $("search").value.trim().toLowerCase();
    const order = orders.find((x) => x.key === $("sort").value).index;
    view = order.map((i) => P[i])
      .filter((p) => f(p) && (!q || (p.id + " " + p.name + " " + p.answer + " " + p.noun).toLowerCase().includes(q)));
    page = 0;
    render();
  }
  const go = (delta) => { const next = Math.max(0, Math.min(pages() - 1, page + delta));
    if (next !== page) { page = next; render(); window.scrollTo(0, 0); } };
  document.querySelectorAll(".prev").forEach((b) => b.addEventListener("click", () => go(-1)));
  document.querySelectorAll(".next").forEach((b) => b.addEventListener("click", () => go(1)));
  ["sort", "filter", "perpage"].forEach((id) => $(id).addEventListener("change", update));
  $("search").addEventListener("input", update);
  $("zoom").addEventListener("input", () => {
    document.documentElement.style.setProperty("--tile", String($("zoom").value / 100)); });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === "ArrowRight") go(1);
    if (e.key === "ArrowLeft") go(-1);
  });
  const startPage = loadState();
  update();
  if (startPage) { page = startPage; render(); }
})();
