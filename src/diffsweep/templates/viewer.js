(function () {
  "use strict";
  // The run viewer: lays any grid axis against any other from window.DIFFSWEEP_RUN (data.js).
  // Only the rows and columns in view are in the DOM, so runs of many thousand items stay fast.
  const RUN = window.DIFFSWEEP_RUN;
  const $ = (selector) => document.querySelector(selector);
  if (!RUN) {
    $("#summary").textContent = "data.js is missing or unreadable: rebuild it with `diffsweep-runs viewer RUN`.";
    return;
  }
  const LABEL_WIDTH = 180;
  const NOT_MADE = "not made"; // an item of the grid without an output yet; the sheets say the same
  const OVERSCAN = 2;
  const axes = RUN.axes;
  const axisIndex = new Map(axes.map((axis, i) => [axis.name, i]));
  const varying = axes.filter((axis) => axis.values.length > 1).map((axis) => axis.name);
  const builders = new Map(RUN.builders.map((b) => [b.hash, b]));
  const byCoords = new Map(RUN.items.map((item) => [item.coords.join(","), item]));
  const byIndex = new Map(RUN.items.map((item) => [item.index, item]));
  const byId = new Map(RUN.items.filter((item) => item.item_id).map((item) => [item.item_id, item]));
  const fitted = new Map(); // "<axis>|<characters per line>|<lines>" -> each value's label lines in that box

  // A label box holds `lines` lines of about `perLine` characters; longer values are shortened so what differs
  // stays in it. Words are never broken across lines: one too long for a line is cut short with an ellipsis.
  function fittedLabels(name, perLine, lines) {
    const key = name + "|" + perLine + "|" + lines;
    if (!fitted.has(key)) {
      const values = axes[axisIndex.get(name)].values;
      const spans = differingSpans(values);
      fitted.set(key, values.map((value, i) => fitLines(value, perLine, lines, spans[i])));
    }
    return fitted.get(key);
  }

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  // --- labels: shortened from the middle around what tells a value from the values most like it ------------------
  // The same rule as the sheets' (labels.py): the part between the longest head and the longest tail a value shares
  // with any other value stays, so one unrelated value among several that differ in a word cannot hide that word.
  const ELLIPSIS = "…";
  const MIN_CUT = 4; // characters, as in labels.py
  const inWord = (char) => /[\p{L}\p{N}._-]/u.test(char);

  function sharedHead(a, b) {
    let n = 0;
    while (n < a.length && n < b.length && a[n] === b[n]) n++;
    return n;
  }

  // for each value, the longest head it shares with another value (of key(value)); sorted, that one is next to it
  function longestShared(values, key) {
    const keyed = values.map(key);
    const order = [...new Set(keyed)].sort();
    const longest = new Map(order.map((value, i) => [value, Math.max(0,
      ...[order[i - 1], order[i + 1]].filter((other) => other !== undefined).map((other) => sharedHead(value, other)))]));
    return keyed.map((value) => longest.get(value));
  }

  function differingSpans(values) {
    const heads = longestShared(values, (value) => value);
    const tails = longestShared(values, (value) => [...value].reverse().join(""));
    return values.map((text, i) => {
      let start = heads[i];
      let end = Math.max(start, text.length - tails[i]);
      while (start > 0 && inWord(text[start - 1]) && (start === text.length || inWord(text[start]))) start--;
      while (end < text.length && inWord(text[end]) && (end === 0 || inWord(text[end - 1]))) end++;
      // a shared head or tail of a few characters ("a ") is not worth the ellipsis that would stand for it
      return [start < MIN_CUT ? 0 : start, text.length - end < MIN_CUT ? text.length : end];
    });
  }

  function shortenMiddle(text, keep, [start, end]) {
    if (text.length <= keep) return text;
    const lead = start > 0 ? 1 : 0;
    const trail = end < text.length ? 1 : 0;
    let room = keep - lead - trail;
    if (end - start <= room) { // the part that differs fits: widen it evenly into the shared head and tail
      const spare = room - (end - start);
      let before = Math.min(start, Math.floor(spare / 2));
      const after = Math.min(text.length - end, spare - before);
      before = Math.min(start, spare - after);
      const a = start - before;
      const b = end + after;
      return (a > 0 ? ELLIPSIS : "") + text.slice(a, b) + (b < text.length ? ELLIPSIS : "");
    }
    const core = text.slice(start, end);
    room = Math.max(2, room - 1);
    const head = Math.ceil(room / 2);
    return (lead ? ELLIPSIS : "") + core.slice(0, head) + ELLIPSIS + core.slice(core.length - (room - head)) +
      (trail ? ELLIPSIS : "");
  }

  // words in lines of at most `perLine` characters; a longer word has a line of its own
  function wrapWords(text, perLine) {
    const lines = [];
    for (const word of text.split(/\s+/).filter(Boolean)) {
      const last = lines.length - 1;
      if (last >= 0 && lines[last].length + 1 + word.length <= perLine) lines[last] += " " + word;
      else lines.push(word);
    }
    return lines.length ? lines : [""];
  }

  function fitLines(value, perLine, lines, span) {
    let shown = value;
    let keep = value.length;
    while (keep > 1 && wrapWords(shown, perLine).length > lines) {
      keep = Math.max(1, Math.min(keep - 1, Math.floor(keep * 0.9)));
      shown = shortenMiddle(value, keep, span);
    }
    return wrapWords(shown, perLine);
  }

  for (const axis of axes) {
    const spans = differingSpans(axis.values);
    axis.short = axis.values.map((value, i) => shortenMiddle(value, 80, spans[i])); // for pins and toggles
  }

  function quote(word) {
    return /^[\w@%+=:,./-]+$/.test(word) ? word : "'" + word.replace(/'/g, "'\\''") + "'";
  }

  // --- the view, kept in the URL fragment ---------------------------------------------------------
  const state = { x: "", y: "", x2: "", y2: "", pins: {}, hide: {}, size: 160, heatmap: "", item: "" };

  // In a zip sweep the axes advance together: each point is one item, so no axis is pinned and a
  // cell exists where the placed axes sit at the same point (one axis alone lists every point).
  const zip = RUN.mode === "zip";

  // The first view is what contact_sheet.png shows (data.js says which axes go where); every other axis pinned
  // at its first value, as on that first sheet.
  function defaults() {
    if (zip) {
      state.y = varying[0] || "";
      return;
    }
    Object.assign(state, RUN.view);
  }

  function readFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const hasView = ["x", "y", "x2", "y2"].some((key) => params.has(key));
    Object.assign(state, { x: "", y: "", x2: "", y2: "", pins: {}, hide: {}, heatmap: "", item: "" });
    if (!hasView) defaults();
    const used = new Set();
    for (const key of ["x", "y", "x2", "y2"]) {
      const name = params.get(key) || (hasView ? "" : state[key]);
      state[key] = varying.includes(name) && !used.has(name) ? name : "";
      if (state[key]) used.add(state[key]);
    }
    for (const [key, value] of params) {
      if (key.startsWith("pin.") && axisIndex.has(key.slice(4))) {
        const position = positionOf(axes[axisIndex.get(key.slice(4))], value);
        if (position >= 0) state.pins[key.slice(4)] = position;
      } else if (key.startsWith("hide.") && axisIndex.has(key.slice(5))) {
        state.hide[key.slice(5)] = value.split(",").filter((v) => v !== "").map(Number).filter(Number.isInteger);
      }
    }
    const size = Number(params.get("size"));
    if (size >= 48 && size <= 512) state.size = size;
    if (RUN.metrics.includes(params.get("heatmap"))) state.heatmap = params.get("heatmap");
    if (byId.has(params.get("item"))) state.item = params.get("item");
  }

  // A pinned value in the URL is the value as its label says it (`pin.guidance_scale=7.5`), or as written in the
  // config; a number matches the same number however written (`pin.guidance_scale=1` pins 1.0).
  function positionOf(axis, text) {
    const exact = [axis.values, axis.full].map((texts) => texts.indexOf(text)).find((position) => position >= 0);
    if (exact !== undefined) return exact;
    const number = text.trim() === "" ? NaN : Number(text);
    return Number.isNaN(number) ? -1 : axis.full.findIndex((full) => full.trim() !== "" && Number(full) === number);
  }

  function fragment() {
    const params = new URLSearchParams();
    for (const key of ["x", "y", "x2", "y2"]) if (state[key]) params.set(key, state[key]);
    for (const name of pinned()) params.set("pin." + name, axes[axisIndex.get(name)].values[pin(name)]);
    for (const [name, hidden] of Object.entries(state.hide)) if (hidden.length) params.set("hide." + name, hidden.join(","));
    params.set("size", String(state.size));
    if (state.heatmap) params.set("heatmap", state.heatmap);
    if (state.item) params.set("item", state.item);
    return "#" + params.toString();
  }

  function writeFragment() {
    const wanted = fragment();
    if (location.hash === wanted) return;
    try {
      history.replaceState(null, "", wanted);
    } catch (error) {
      location.replace(wanted);
    }
  }

  const placed = () => ["x", "y", "x2", "y2"].map((key) => state[key]).filter(Boolean);
  const pinned = () => zip ? [] : varying.filter((name) => !placed().includes(name));
  const pin = (name) => state.pins[name] || 0;

  // --- controls -----------------------------------------------------------------------------------
  const form = $("#controls");

  function fillAxisSelects() {
    for (const key of ["x", "y", "x2", "y2"]) {
      const select = form.elements[key];
      const options = ['<option value="">(none)</option>'].concat(varying.map((name) =>
        `<option value="${esc(name)}">${esc(name)} (${axes[axisIndex.get(name)].values.length})</option>`));
      select.innerHTML = options.join("");
      select.value = state[key];
    }
    form.elements.size.value = String(state.size);
    const heat = form.elements.heatmap;
    heat.innerHTML = ['<option value="">(none)</option>'].concat(RUN.metrics.map((m) => `<option>${esc(m)}</option>`)).join("");
    heat.value = state.heatmap;
    $("#heatmap-control").hidden = !RUN.metrics.length;
  }

  function fillPins() {
    $("#pins").innerHTML = pinned().map((name) => {
      const axis = axes[axisIndex.get(name)];
      const options = axis.short.map((label, i) =>
        `<option value="${i}" title="${esc(axis.full[i])}"${i === pin(name) ? " selected" : ""}>${esc(label)}</option>`);
      return `<label>${esc(name)} <select data-axis="${esc(name)}">${options.join("")}</select></label>`;
    }).join("");
  }

  function fillToggles() {
    $("#toggle-lists").innerHTML = placed().map((name) => {
      const axis = axes[axisIndex.get(name)];
      const hidden = new Set(state.hide[name] || []);
      const boxes = axis.short.map((label, i) => `<label title="${esc(axis.full[i])}"><input type="checkbox" ` +
        `data-show-axis="${esc(name)}" value="${i}"${hidden.has(i) ? "" : " checked"}> ${esc(label)}</label>`);
      return `<div class="toggle-list"><b>${esc(name)}</b>${boxes.join("")}</div>`;
    }).join("");
  }

  function syncControls() {
    fillAxisSelects();
    fillPins();
    fillToggles();
    document.documentElement.style.setProperty("--cell", state.size + "px");
  }

  form.addEventListener("change", (event) => {
    const target = event.target;
    if (["x", "y", "x2", "y2"].includes(target.name)) {
      for (const key of ["x", "y", "x2", "y2"]) if (key !== target.name && state[key] === target.value) state[key] = "";
      state[target.name] = target.value;
    } else if (target.dataset.axis) {
      state.pins[target.dataset.axis] = Number(target.value);
    } else if (target.dataset.showAxis) {
      const name = target.dataset.showAxis;
      const hidden = new Set(state.hide[name] || []);
      if (target.checked) hidden.delete(Number(target.value)); else hidden.add(Number(target.value));
      state.hide[name] = [...hidden].sort((a, b) => a - b);
    } else if (target.name === "heatmap") {
      state.heatmap = target.value;
    } else {
      return;
    }
    update();
  });
  form.elements.size.addEventListener("input", () => {
    state.size = Number(form.elements.size.value);
    update();
  });
  $("#swap").addEventListener("click", () => {
    [state.x, state.y, state.x2, state.y2] = [state.y, state.x, state.y2, state.x2];
    update();
  });

  // --- layout ---------------------------------------------------------------------------------
  let layout = null;

  function shownPositions(name) {
    if (!name) return [null];
    const hidden = new Set(state.hide[name] || []);
    return axes[axisIndex.get(name)].values.map((_, i) => i).filter((i) => !hidden.has(i));
  }

  function makeLayout() {
    const cols = [];
    for (const outer of shownPositions(state.x)) for (const inner of shownPositions(state.x2)) cols.push([outer, inner]);
    const rows = [];
    for (const outer of shownPositions(state.y)) for (const inner of shownPositions(state.y2)) rows.push([outer, inner]);
    const base = axes.map((axis) => pin(axis.name));
    return { cols, rows, base, size: state.size, metric: state.heatmap, range: metricRange(state.heatmap) };
  }

  function itemAt(row, col) {
    const coords = layout.base.slice();
    const chosen = [];
    const set = (name, position) => {
      if (name && position !== null) { coords[axisIndex.get(name)] = position; chosen.push(position); }
    };
    set(state.x, col[0]); set(state.x2, col[1]); set(state.y, row[0]); set(state.y2, row[1]);
    if (zip) return chosen.length && chosen.every((p) => p === chosen[0]) ? byIndex.get(chosen[0]) : undefined;
    const found = byCoords.get(coords.join(","));
    if (found || !RUN.not_on_axis) return found;
    // a chain: an item of a stage that has no such axis (its value there is "—") matches whatever that axis is
    // pinned at, so a first-stage item shows beside its children whichever strength is pinned
    for (const name of pinned()) {
      const axis = axes[axisIndex.get(name)];
      if (axis.values[axis.values.length - 1] === RUN.not_on_axis) coords[axisIndex.get(name)] = axis.values.length - 1;
    }
    return byCoords.get(coords.join(","));
  }

  function metricRange(metric) {
    if (!metric) return null;
    const values = RUN.items.map((item) => item.scores[metric] && item.scores[metric].value).filter((v) => typeof v === "number");
    return values.length ? [Math.min(...values), Math.max(...values)] : null;
  }

  // four significant digits, but 10,000 and more in whole digits, never in e-notation (as the score tables)
  const readable = (value) => Math.abs(value) >= 1e4 ? value.toFixed(0) : value.toPrecision(4);

  function tint(value) {
    const [low, high] = layout.range;
    const t = high > low ? (value - low) / (high - low) : 1;
    return `hsla(${Math.round(t * 120)},85%,50%,0.45)`; // red (lowest) to green (highest)
  }

  function label(name, position, cls, attr, perLine, lines) {
    const axis = axes[axisIndex.get(name)];
    const shown = fittedLabels(name, perLine, lines)[position].map((line) => `<span class="line">${esc(line)}</span>`);
    return `<span class="${cls}" data-${attr}="${esc(axis.values[position])}" data-axis-name="${esc(name)}" ` +
      `title="${esc(name + " = " + axis.full[position])}">${shown.join(" ")}</span>`;
  }

  // audio: its envelope, drawn as the sheets draw it (data.js has the min and max of each column)
  function waveformSvg(envelope) {
    const top = envelope.map(([, high], x) => `${x},${(1 - high).toFixed(3)}`);
    const bottom = envelope.map(([low], x) => `${x},${(1 - low).toFixed(3)}`).reverse();
    return `<svg class="wave" viewBox="0 0 ${Math.max(1, envelope.length - 1)} 2" preserveAspectRatio="none">` +
      `<line x1="0" y1="1" x2="${envelope.length}" y2="1"></line><polygon points="${top.concat(bottom).join(" ")}"></polygon></svg>`;
  }

  function cellHtml(item) {
    if (!item) return '<div class="cell none"></div>';
    const id = item.item_id ? ` data-item-id="${esc(item.item_id)}"` : "";
    const first = item.outputs[0];
    let cls = item.status;
    let inner;
    if (item.status === "failed") inner = '<span class="mark">failed</span>';
    else if (item.status === "missing") inner = `<span class="mark">${NOT_MADE}</span>`;
    else if (!first) inner = '<span class="mark">no output</span>';
    else if (first.kind === "image") inner = `<img src="${esc(encodeURI(first.path))}" alt="" decoding="async">`;
    else if (first.kind === "video" || first.kind === "video_audio") {
      inner = `<video src="${esc(encodeURI(first.path))}#t=0.01" preload="metadata" muted loop playsinline></video>`;
      if (first.kind === "video_audio") { cls += " sound"; inner += '<span class="mark sound">♪</span>'; }
    }
    else {
      cls += " audio";
      inner = first.waveform ? waveformSvg(first.waveform) : '<span class="mark">♪ audio</span>';
    }
    let extra = "";
    if (layout.metric) {
      const score = item.scores[layout.metric];
      if (score && typeof score.value === "number") {
        extra = `<span class="tint" style="background:${tint(score.value)}"></span><span class="score">${readable(score.value)}</span>`;
      } else if (score && score.skipped) {
        extra = '<span class="score">skipped</span>';
      }
    }
    const tip = `#${item.index} ${item.status}` + (item.error ? ": " + item.error.slice(0, 200) : "");
    return `<div class="cell ${cls}" data-index="${item.index}"${id} tabindex="-1" title="${esc(tip)}">${inner}${extra}</div>`;
  }

  const scroller = $("#scroller");
  const grid = $("#grid");
  let headHeight = 0;
  let windowKey = "";

  function headHtml(c0, c1) {
    const size = layout.size;
    const corner = `<div class="corner">${esc([state.y, state.y2].filter(Boolean).join(" / ") || "")}` +
      `${state.x || state.y ? " \\ " : ""}${esc([state.x, state.x2].filter(Boolean).join(" / "))}</div>`;
    const pads = (html) => `<div class="pad" style="width:${c0 * size}px"></div>${html}` +
      `<div class="pad" style="width:${(layout.cols.length - 1 - c1) * size}px"></div>`;
    let outer = "";
    let inner = "";
    if (state.x && state.x2) {
      let html = "";
      for (let c = c0; c <= c1;) {
        let end = c;
        while (end + 1 <= c1 && layout.cols[end + 1][0] === layout.cols[c][0]) end++;
        html += `<div class="collabel outer" style="width:${(end - c + 1) * size}px">` +
          label(state.x, layout.cols[c][0], "", "col-label", perLine((end - c + 1) * size), COLUMN_LINES) + "</div>";
        c = end + 1;
      }
      outer = `<div class="row">${corner}${pads(html)}</div>`;
    }
    const innerAxis = state.x2 || state.x;
    if (innerAxis) {
      let html = "";
      for (let c = c0; c <= c1; c++) {
        const position = state.x2 ? layout.cols[c][1] : layout.cols[c][0];
        html += `<div class="collabel" style="width:${size}px">` +
          `${label(innerAxis, position, "", "col-label", perLine(size), COLUMN_LINES)}</div>`;
      }
      inner = `<div class="row">${outer ? '<div class="corner"></div>' : corner}${pads(html)}</div>`;
    }
    return `<div class="head">${outer}${inner || `<div class="row">${corner}</div>`}</div>`;
  }

  // characters of 12 px text a line of a label box this wide holds (7 px a character, 8 px of padding)
  const perLine = (width) => Math.max(1, Math.floor((width - 8) / 7));
  const COLUMN_LINES = 4; // .collabel's max-height

  function rowLabelHtml(row) {
    const lines = Math.max(1, Math.floor((layout.size - 8) / 15 / (state.y && state.y2 ? 2 : 1)));
    let html = "";
    if (state.y) html += label(state.y, row[0], "outer", "row-label", perLine(LABEL_WIDTH), lines);
    if (state.y2) html += label(state.y2, row[1], "inner", "row-label", perLine(LABEL_WIDTH), lines);
    return `<div class="rowlabel" style="height:${layout.size}px">${html}</div>`;
  }

  function render(force) {
    if (!layout) return;
    const size = layout.size;
    const rows = layout.rows.length;
    const cols = layout.cols.length;
    const top = scroller.scrollTop - headHeight;
    const left = scroller.scrollLeft;
    const r0 = Math.max(0, Math.floor(top / size) - OVERSCAN);
    const r1 = Math.min(rows - 1, Math.ceil((top + scroller.clientHeight) / size) + OVERSCAN);
    const c0 = Math.max(0, Math.floor(left / size) - OVERSCAN);
    const c1 = Math.min(cols - 1, Math.ceil((left + scroller.clientWidth) / size) + OVERSCAN);
    const key = [r0, r1, c0, c1].join(",");
    if (!force && key === windowKey) return;
    windowKey = key;
    const parts = [headHtml(c0, c1), `<div style="height:${r0 * size}px"></div>`];
    for (let r = r0; r <= r1; r++) {
      const row = layout.rows[r];
      let cells = "";
      for (let c = c0; c <= c1; c++) cells += cellHtml(itemAt(row, layout.cols[c]));
      parts.push(`<div class="row">${rowLabelHtml(row)}<div class="pad" style="width:${c0 * size}px"></div>${cells}` +
        `<div class="pad" style="width:${(cols - 1 - c1) * size}px"></div></div>`);
    }
    parts.push(`<div style="height:${Math.max(0, rows - 1 - r1) * size}px"></div>`);
    grid.style.width = LABEL_WIDTH + cols * size + "px";
    grid.innerHTML = parts.join("");
    const measured = grid.firstElementChild.offsetHeight;
    if (measured !== headHeight) {
      headHeight = measured;
      render(true); // the window depends on the header's height
    }
  }

  let pending = false;
  scroller.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(false); });
  });
  window.addEventListener("resize", () => render(true));

  // --- the detail panel --------------------------------------------------------------------------
  const detail = $("#detail");

  function command(item) {
    const target = item.item_id ? ["--item", item.item_id] : ["--index", String(item.index)];
    return ["diffsweep-runs", "rerun", RUN.run_dir, ...target].map(quote).join(" ");
  }

  function mediaHtml(output) {
    const src = esc(encodeURI(output.path));
    if (output.kind === "image") return `<a href="${src}"><img src="${src}" alt="${esc(output.path)}"></a>`;
    if (output.kind === "video") return `<video src="${src}" controls autoplay muted loop playsinline></video>`;
    // with sound: not muted, so it waits for play (browsers refuse to autoplay sound)
    if (output.kind === "video_audio") return `<video src="${src}" controls loop playsinline></video>`;
    if (output.kind === "audio") return `<audio src="${src}" controls preload="auto"></audio>`;
    return `<a href="${src}">${esc(output.path)}</a>`;
  }

  function recordRows(item) {
    const builder = builders.get(item.builder) || null;
    const rows = [["item id", item.item_id || "(not made yet; its id is not known here)"], ["index", item.index],
      ["status", item.status]];
    if (item.stage) rows.push(["stage", item.stage]);
    if (item.parent) rows.push(["parent", item.parent]);
    for (const [key, value] of Object.entries(item.params)) {
      // an axis value reads as on the axis labels (1.0 stays 1.0); other values as JSON
      const text = axisIndex.has(key) ? axes[axisIndex.get(key)].full[item.coords[axisIndex.get(key)]] : null;
      rows.push([key, text !== null && text !== undefined ? text : typeof value === "string" ? value : JSON.stringify(value)]);
    }
    if (!("seed" in item.params)) rows.push(["seed", item.seed]);
    if (builder) {
      rows.push(["builder", builder.label + "  (" + builder.hash + ")"]);
      if (builder.identity && Object.keys(builder.identity).length) {
        rows.push(["builder differs by", JSON.stringify(builder.identity, null, 1)]); // from the run's other builders
      }
      const identity = item.identity || builder.full_identity ||
        Object.fromEntries(["provider", "pipeline", "model", "revision", "dtype"].filter((k) => builder[k] != null).map((k) => [k, builder[k]]));
      rows.push(["builder identity", JSON.stringify(identity, null, 1)]);
    }
    rows.push(["scheduler", item.scheduler || (item.identity && item.identity.scheduler ? JSON.stringify(item.identity.scheduler) : "the model's own")]);
    if (item.seconds != null) rows.push(["seconds", item.seconds]);
    if (item.created) rows.push(["created", item.created]);
    for (const [metric, score] of Object.entries(item.scores)) {
      const value = typeof score.value === "number" ? String(score.value) : "skipped: " + (score.skipped || "no value");
      const model = score.model ? "  (" + score.model + (score.revision ? "@" + score.revision : "") + ")" : "";
      rows.push(["score " + metric, value + model]);
    }
    for (const output of item.outputs) rows.push(["output", output.path]);
    for (const prepared of item.controls || []) {
      rows.push(["control image", `${prepared.path}  (${prepared.preprocess} ${JSON.stringify(prepared.settings)})`]);
    }
    if (item.error) rows.push(["error", item.error]);
    return rows.map(([key, value]) => `<tr${key === "error" ? ' class="error"' : ""}><th>${esc(key)}</th><td>${esc(value)}</td></tr>`).join("");
  }

  // a chain's item: its parent, the parent's parent, ... up to the first stage, each with what it was made with
  function lineageHtml(item) {
    const parts = [];
    const seen = new Set();
    let parent = item.parent ? byId.get(item.parent) : null;
    while (parent && !seen.has(parent.item_id)) {
      seen.add(parent.item_id);
      const first = parent.outputs[0];
      const thumb = first ? (first.kind === "image" ? `<img src="${esc(encodeURI(first.path))}" alt="">` :
        `<video src="${esc(encodeURI(first.path))}#t=0.01" preload="metadata" muted></video>`) : `<span>${NOT_MADE}</span>`;
      const params = Object.entries(parent.params).filter(([key]) => key !== "prompt")
        .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`).join(" ");
      parts.push(`<figure class="parent" data-item-id="${esc(parent.item_id)}">${thumb}<figcaption>` +
        `${esc((parent.stage || "") + " #" + parent.index)}<br>${esc(params)}</figcaption></figure>`);
      parent = parent.parent ? byId.get(parent.parent) : null;
    }
    if (item.parent && !parts.length) parts.push(`<span>parent ${esc(item.parent.slice(0, 12))} (not in this run)</span>`);
    return parts.length ? `<b>lineage</b> ${parts.join("")}` : "";
  }

  function openItem(item) {
    state.item = item.item_id || "";
    $("#detail-title").textContent = `#${item.index} · ${item.status === "missing" ? NOT_MADE : item.status}`;
    $("#detail-media").innerHTML = (item.outputs.map(mediaHtml).join("") ||
      `<p>${item.status === "failed" ? "failed: no output" : NOT_MADE + " yet"}</p>`) +
      // the control images the item was conditioned on, beside its output
      (item.controls || []).map((prepared) => mediaHtml({path: prepared.path, kind: "image"})).join("");
    const lineage = $("#detail-lineage");
    lineage.innerHTML = lineageHtml(item);
    lineage.hidden = !lineage.innerHTML;
    $("#detail-command").textContent = command(item);
    $("#copied").textContent = "";
    $("#detail-record").innerHTML = recordRows(item);
    detail.dataset.itemId = item.item_id || "";
    detail.hidden = false;
    writeFragment();
  }

  function closeItem() {
    detail.hidden = true;
    $("#detail-media").innerHTML = ""; // stops playing media
    state.item = "";
    writeFragment();
  }

  grid.addEventListener("click", (event) => {
    const cell = event.target.closest(".cell[data-index]");
    if (cell) openItem(RUN.items[Number(cell.dataset.index)]);
  });
  grid.addEventListener("mouseover", (event) => {
    if (event.target.tagName === "VIDEO") event.target.play().catch(() => {});
  });
  grid.addEventListener("mouseout", (event) => {
    if (event.target.tagName === "VIDEO") event.target.pause();
  });
  $("#detail-close").addEventListener("click", closeItem);
  $("#detail-lineage").addEventListener("click", (event) => {
    const figure = event.target.closest("figure[data-item-id]");
    if (figure && byId.has(figure.dataset.itemId)) openItem(byId.get(figure.dataset.itemId));
  });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape" && !detail.hidden) closeItem(); });

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) { // no clipboard API here (file:// in some browsers): select and copy instead
      const area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      let done = false;
      try { done = document.execCommand("copy"); } catch (ignored) { done = false; }
      area.remove();
      return done;
    }
  }

  $("#copy").addEventListener("click", async () => {
    const done = await copyText($("#detail-command").textContent);
    $("#copied").textContent = done ? "copied" : "select the command and copy it";
  });

  // --- header texts and start -----------------------------------------------------------------------
  // Counted from the cells, so the header says what the grid shows: after a rerun of single items, the items it
  // left out are "not made" in both.
  function summary() {
    const count = (status) => RUN.items.filter((item) => item.status === status).length;
    const selected = RUN.counts && RUN.counts.planned < RUN.items.length ? ` (${RUN.counts.planned} selected)` : "";
    const tally = `${count("ok")} done · ${count("failed")} failed · ${count("missing")} ${NOT_MADE} · ` +
      `${RUN.items.length} planned${selected}` + (RUN.counts ? "" : " · no readable run.json");
    const sheet = RUN.sheet ? ' · <a href="contact_sheet.png">contact sheet</a>' : "";
    $("#summary").innerHTML = `status: <b>${esc(RUN.status)}</b> · ${esc(tally)}${sheet}`;
    const fixed = Object.entries(RUN.fixed).map(([k, v]) => `${k}=${v}`);
    $("#fixed").textContent = fixed.length ? "fixed: " + fixed.join(" · ") : "";
  }

  function legend() {
    const range = layout.range;
    $("#heatmap-legend").innerHTML = range ? `<span class="low">${esc(readable(range[0]))}</span> → ` +
      `<span class="high">${esc(readable(range[1]))}</span>` : state.heatmap ? "no values" : "";
  }

  function update() {
    layout = makeLayout();
    legend();
    syncControls();
    writeFragment();
    render(true);
  }

  function fromFragment() {
    readFragment();
    update();
    const item = state.item && byId.get(state.item);
    if (item) openItem(item); else if (!detail.hidden) closeItem();
  }

  window.addEventListener("hashchange", () => { if (location.hash !== fragment()) fromFragment(); });
  summary();
  fromFragment();
})();
