// tally ui: the experiment table, compare (diff + overlaid plots), records, actions.
// Plain JavaScript, no build step. Every answer comes from the server's /api routes,
// which call the same cas functions as the CLI; this file only lays them out.
"use strict";

(function () {
  // The token came in the URL: keep it in memory, send it as a header, and take it out
  // of the address bar (and so out of the history and any screenshot).
  const params = new URLSearchParams(location.search);
  const TOKEN = params.get("token") || "";
  if (TOKEN) history.replaceState(null, "", location.pathname);
  const PAGE = 100;
  const LIVE_MS = 1000;
  const HIDDEN_KEY = "tally-ui-hidden-columns";

  const state = {
    filter: "", sort: "", offset: 0, columns: [], rows: [], matched: 0, total: 0,
    generation: null, selected: new Set(), current: null,
    hidden: new Set(JSON.parse(localStorage.getItem(HIDDEN_KEY) || "[]")),
    comparing: [], running: new Set(),
  };
  const $ = (id) => document.getElementById(id);

  async function api(path, query) {
    const qs = new URLSearchParams(query || []);
    const res = await fetch(path + (qs.toString() ? "?" + qs : ""), {headers: {"X-Tally-Token": TOKEN}});
    const body = await res.json().catch(() => ({message: res.statusText}));
    if (!res.ok) throw body;
    return body;
  }

  async function post(path, body) {
    const res = await fetch(path, {method: "POST", body: JSON.stringify(body),
      headers: {"X-Tally-Token": TOKEN, "Content-Type": "application/json"}});
    const out = await res.json().catch(() => ({message: res.statusText}));
    if (!res.ok) throw out;
    return out;
  }

  function errorText(e) {
    if (!e) return "error";
    return (e.message || String(e)) + (e.hint ? "\nhint: " + e.hint : "");
  }

  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  function fmt(v) {
    if (v === null || v === undefined) return "-";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      return String(Number(v.toPrecision(5)));
    }
    if (typeof v === "boolean") return v ? "true" : "false";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // -- the table ------------------------------------------------------------------------
  async function loadTable() {
    const q = {offset: state.offset, limit: PAGE};
    if (state.filter) q.filter = state.filter;
    if (state.sort) q.sort = state.sort;
    let data;
    try {
      data = await api("/api/table", q);
    } catch (e) {
      $("filter-error").textContent = errorText(e);
      $("filter-error").hidden = false;
      return;
    }
    $("filter-error").hidden = true;
    Object.assign(state, {columns: data.columns, rows: data.rows, matched: data.matched,
                          total: data.total, generation: data.generation});
    renderTable();
    renderColumnsPanel();
  }

  function visibleColumns() {
    return state.columns.filter((c) => c.id === "name" || !state.hidden.has(c.id));
  }

  function renderTable() {
    const cols = visibleColumns();
    const thead = $("exps").tHead;
    thead.replaceChildren();
    // Row 1: one cell per run of columns from the same file (DVC's table headers).
    const groups = el("tr", {class: "groups"}, el("th", {rowspan: 1}));
    let prev = null, cell = null;
    for (const c of cols) {
      const g = c.group === "field" ? "" : c.file;
      if (cell && g === prev) { cell.colSpan += 1; continue; }
      cell = el("th", {}, g);
      cell.colSpan = 1;
      groups.append(cell);
      prev = g;
    }
    const keys = el("tr", {class: "keys"}, el("th", {title: "select to compare"}, "✓"));
    const [sortKey, sortDir] = state.sort.split(/:(?=asc$|desc$)/);
    for (const c of cols) {
      const sorted = sortKey === c.name;
      keys.append(el("th", {class: sorted ? "sorted" : "", "data-col": c.id, title: c.name,
        onclick: () => sortBy(c)}, c.key + (sorted ? (sortDir === "desc" ? " ▼" : " ▲") : "")));
    }
    thead.append(groups, keys);
    const tbody = $("exps").tBodies[0];
    tbody.replaceChildren();
    state.running = new Set();
    for (const r of state.rows) {
      if (r.status === "running" || r.status === "queued") state.running.add(r.spec);
      const box = el("input", {type: "checkbox", "aria-label": "select " + r.name,
        onclick: (ev) => { ev.stopPropagation(); toggleSelect(r.spec, ev.target.checked); }});
      box.checked = state.selected.has(r.spec);
      const tr = el("tr", {"data-spec": r.spec, class: rowClass(r), onclick: () => showDetails(r)},
        el("td", {}, box));
      for (const c of cols) {
        let v = c.id in r.cells ? r.cells[c.id] : null;
        if (c.id === "baseline" && v) v = v.slice(0, 7);
        const td = el("td", {"data-col": c.id, class: typeof v === "number" ? "num" : ""}, fmt(v));
        if (c.id === "name" && r.origin && r.origin !== "local") td.append(el("span", {class: "origin"}, " @" + r.origin));
        if (c.id === "status") {
          td.classList.add("status-" + r.status);
          const step = r.cells["metrics:live:step"];
          if (r.status === "running" && step !== undefined) td.textContent = "running · step " + step;
        }
        tr.append(td);
      }
      tbody.append(tr);
    }
    const end = state.offset + state.rows.length;
    $("page-info").textContent = state.matched ? `${state.offset + 1}–${end} of ${state.matched}` : "no rows";
    $("counts").textContent = state.filter ? `${state.matched} of ${state.total} experiments match`
                                           : `${state.total} experiments`;
    $("prev").disabled = state.offset === 0;
    $("next").disabled = end >= state.matched;
  }

  function rowClass(r) {
    return [state.selected.has(r.spec) ? "selected" : "", state.current === r.spec ? "current" : ""].join(" ");
  }

  function sortBy(c) {
    const [key, dir] = state.sort.split(/:(?=asc$|desc$)/);
    // First click: ascending (descending for metrics: best first is usually highest).
    let next = c.group === "metrics" ? "desc" : "asc";
    if (key === c.name) next = dir === "asc" ? "desc" : "asc";
    state.sort = c.name + ":" + next;
    state.offset = 0;
    loadTable();
  }

  function renderColumnsPanel() {
    const panel = $("columns-panel");
    panel.replaceChildren();
    const byGroup = new Map();
    for (const c of state.columns) {
      if (c.id === "name") continue;
      const g = c.group === "field" ? "fields" : c.file;
      if (!byGroup.has(g)) byGroup.set(g, []);
      byGroup.get(g).push(c);
    }
    for (const [g, cols] of byGroup) {
      const fs = el("fieldset", {}, el("legend", {}, g));
      for (const c of cols) {
        const box = el("input", {type: "checkbox", onchange: (ev) => {
          if (ev.target.checked) state.hidden.delete(c.id); else state.hidden.add(c.id);
          localStorage.setItem(HIDDEN_KEY, JSON.stringify([...state.hidden]));
          renderTable();
        }});
        box.checked = !state.hidden.has(c.id);
        fs.append(el("label", {}, box, " " + c.key));
      }
      panel.append(fs);
    }
  }

  function toggleSelect(spec, on) {
    if (on) state.selected.add(spec); else state.selected.delete(spec);
    for (const tr of $("exps").tBodies[0].rows) tr.className = rowClass({spec: tr.dataset.spec});
    compare();
  }

  // -- compare: diff and overlaid plots ---------------------------------------------------
  async function compare() {
    const specs = [...state.selected];
    state.comparing = specs;
    if (specs.length < 2) { $("compare").hidden = true; return; }
    $("compare").hidden = false;
    $("compare-names").textContent = specs.map((s) => s.split("/").pop()).join(", ");
    try {
      renderDiff(await api("/api/diff", specs.map((s) => ["spec", s])));
    } catch (e) {
      $("diff").textContent = errorText(e);
    }
    await loadPlots(specs);
  }

  function renderDiff(d) {
    const head = el("tr", {}, el("th", {}, ""), el("th", {}, "key"),
      ...d.labels.map((l) => el("th", {}, l)));
    const body = [];
    for (const r of d.rows) {
      body.push(el("tr", {class: r.changed ? "changed-row" : ""}, el("td", {}, r.group),
        el("td", {}, r.key), ...r.values.map((v) => el("td", {class: r.changed ? "changed num" : "num"}, fmt(v)))));
    }
    for (const r of d.deps) {
      if (!r.changed) continue;
      body.push(el("tr", {}, el("td", {}, "deps"), el("td", {}, r.path),
        ...r.values.map((v) => el("td", {class: "changed"}, v || "-"))));
    }
    $("diff").replaceChildren(el("table", {class: "diff"}, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  async function loadPlots(specs) {
    let doc;
    try {
      doc = await api("/api/plots", specs.map((s) => ["spec", s]));
    } catch (e) {
      $("plots").textContent = errorText(e);
      return;
    }
    if (JSON.stringify(specs) !== JSON.stringify(state.comparing)) return;  // selection moved on
    const errs = doc.errors || [];
    $("plot-errors").hidden = errs.length === 0;
    $("plot-errors").textContent = errs.map((e) => [e.name, e.rev, e.msg].filter(Boolean).join(": ")).join("\n");
    const box = $("plots");
    box.replaceChildren();
    const data = doc.data || {};
    if (!Object.keys(data).length) box.textContent = "No plots: no plot definitions or live step files in these experiments.";
    for (const [id, entries] of Object.entries(data)) {
      const div = el("div", {class: "plot", "data-plot": id}, el("h4", {}, id));
      box.append(div);
      for (const entry of entries) {
        if (entry.type === "vega") {
          const chart = el("div", {class: "chart"});
          div.append(chart);
          vegaEmbed(chart, entry.content, {renderer: "svg", actions: false}).catch((e) => {
            chart.textContent = "could not draw: " + e;
          });
        } else {
          div.append(el("figure", {}, el("img", {src: entry.url, alt: entry.revisions.join(", ")}),
            el("figcaption", {}, entry.revisions.join(", "))));
        }
      }
    }
  }

  // -- one experiment's record and its actions ---------------------------------------------
  async function showDetails(r) {
    state.current = r.spec;
    for (const tr of $("exps").tBodies[0].rows) tr.className = rowClass({spec: tr.dataset.spec});
    const box = $("details");
    box.hidden = false;
    if (r.status === "running" || r.status === "queued") {
      box.replaceChildren(el("h2", {}, r.name), el("p", {}, `${r.status}: its record is written when it ends.`));
      return;
    }
    let rec;
    try {
      rec = await api("/api/experiment", {spec: r.spec});
    } catch (e) {
      box.replaceChildren(el("h2", {}, r.name), el("p", {class: "error"}, errorText(e)));
      return;
    }
    const dl = el("dl");
    const add = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v === null || v === undefined ? "-" : String(v)));
    add("status", rec.status + (rec.exit_code !== null ? ` (exit ${rec.exit_code})` : ""));
    add("baseline", rec.baseline.slice(0, 12));
    add("record", rec.record);
    add("created", new Date(rec.created / 1e6).toISOString());
    if (rec.started) add("started", new Date(rec.started / 1e6).toISOString());
    if (rec.finished) add("finished", new Date(rec.finished / 1e6).toISOString());
    if (rec.duration !== null) add("duration", rec.duration.toFixed(2) + " s");
    add("host", rec.host);
    if (rec.message) add("message", rec.message);
    for (const s of rec.stages) add("stage " + s.name, `${s.state}: ${s.cmd.join(" && ")}`);
    const outs = el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "output"), el("th", {}, "size"), el("th", {}, "id"))),
      el("tbody", {}, ...rec.outs.map((o) => el("tr", {}, el("td", {}, o.path + (o.is_dir ? "/" : "")),
        el("td", {class: "num"}, o.size === null ? "-" : humanBytes(o.size)), el("td", {}, o.oid.slice(0, 12))))));
    const log = rec.log ? el("pre", {}, (rec.log.truncated ? "…\n" : "") + rec.log.text) : el("p", {}, "no log");
    box.replaceChildren(el("h2", {}, rec.name), actionsBar(rec), dl, el("h3", {}, "Outputs"), outs,
      el("h3", {}, "Log"), log);
  }

  function humanBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function actionsBar(rec) {
    const spec = rec.spec;
    const sets = el("input", {type: "text", placeholder: "-S edits, e.g. lr=0.01 epochs=20", size: 32});
    const name = el("input", {type: "text", placeholder: "name (optional)", size: 14});
    return el("div", {class: "actions"},
      el("button", {type: "button", onclick: () => act("restore", {spec},
        `Restore ${rec.name} into the workspace? Files it changed are overwritten; uncommitted work in the way stops it.`)}, "Restore"),
      el("button", {type: "button", onclick: () => act("promote", {spec},
        `Promote ${rec.name} to a Git branch (exp/${rec.name})?`)}, "Promote"),
      el("button", {type: "button", onclick: () => act("remove", {specs: [spec]},
        `Remove experiment ${rec.name}? Its objects stay until gc.`)}, "Remove"),
      sets, name,
      el("button", {type: "button", onclick: () => {
        const edits = sets.value.trim().split(/\s+/).filter(Boolean);
        act("queue", {spec, set: edits, name: name.value.trim() || null},
          `Queue a variation of ${rec.name} with ${edits.join(" ") || "(no edits)"}?`);
      }}, "Queue variation"));
  }

  function confirmDialog(text) {
    const d = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      d.addEventListener("close", () => resolve(d.returnValue === "ok"), {once: true});
      d.showModal();
    });
  }

  async function act(name, body, question) {
    if (!(await confirmDialog(question))) return;
    try {
      const out = await post("/api/" + name, body);
      toast(name + ": " + JSON.stringify(out).slice(0, 400));
      if (name === "remove") { for (const s of body.specs) state.selected.delete(s); $("details").hidden = true; }
      await loadTable();
    } catch (e) {
      toast(name + " failed: " + errorText(e));
    }
  }

  // -- live updates ------------------------------------------------------------------------
  async function pollLive() {
    try {
      const live = await api("/api/live");
      if (state.generation !== null && live.generation !== state.generation) {
        await loadTable();  // something was recorded, removed or moved in the queue
      }
      const tbody = $("exps").tBodies[0];
      let running = 0;
      for (const x of live.experiments) {
        if (x.status === "running") running++;
        const tr = tbody.querySelector(`tr[data-spec="${CSS.escape(x.spec)}"]`);
        if (!tr) continue;
        const st = tr.querySelector('td[data-col="status"]');
        if (st && x.status === "running") {
          st.textContent = "running" + (x.step !== null ? " · step " + x.step : "");
          st.className = "status-running";
        }
        for (const [col, v] of Object.entries(x.values)) {
          const td = tr.querySelector(`td[data-col="${CSS.escape(col)}"]`);
          if (td) td.textContent = fmt(v);
        }
      }
      $("live-note").textContent = running ? `${running} running` : "";
      if (running && state.comparing.some((s) => live.experiments.some((x) => x.spec === s && x.status === "running"))) {
        if (!pollLive.plotsBusy) {
          pollLive.plotsBusy = true;
          loadPlots(state.comparing).finally(() => { pollLive.plotsBusy = false; });
        }
      }
    } catch (e) {
      $("live-note").textContent = "live updates paused: " + errorText(e);
    }
    setTimeout(pollLive, LIVE_MS);
  }

  // -- wiring ------------------------------------------------------------------------------
  $("filter-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.filter = $("filter").value.trim();
    state.offset = 0;
    loadTable();
  });
  $("clear-filter").addEventListener("click", () => {
    $("filter").value = "";
    state.filter = "";
    state.offset = 0;
    loadTable();
  });
  $("columns-button").addEventListener("click", () => {
    const p = $("columns-panel");
    p.hidden = !p.hidden;
    $("columns-button").setAttribute("aria-expanded", String(!p.hidden));
  });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadTable(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadTable(); });
  loadTable().then(() => setTimeout(pollLive, LIVE_MS));
})();
