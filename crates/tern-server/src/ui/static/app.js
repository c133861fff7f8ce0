// tern web UI: auto-refresh of live regions, live log tail (server-sent events), and buttons
// and forms that call the REST API with the session's CSRF token. No framework, no build.
(function () {
  "use strict";
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function flash(text, bad) {
    const f = document.getElementById("flash");
    if (!f) return;
    f.textContent = text;
    f.className = bad ? "flash bad" : "flash";
    f.hidden = false;
    clearTimeout(flash.t);
    flash.t = setTimeout(() => { f.hidden = true; }, bad ? 8000 : 3000);
  }

  async function call(spec, body) {
    const i = spec.indexOf(" ");
    const method = spec.slice(0, i), url = spec.slice(i + 1);
    const opts = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
    if (body !== undefined && method !== "DELETE") {
      opts.headers["Content-Type"] = "application/json";
      opts.body = typeof body === "string" ? body : JSON.stringify(body);
    }
    const r = await fetch(url, opts);
    let data = null;
    try { data = await r.json(); } catch (_) { /* 204 */ }
    if (!r.ok) throw new Error((data && (data.message + (data.hint ? " (" + data.hint + ")" : ""))) || r.statusText);
    return data;
  }

  // Buttons: data-call="METHOD /api/..." data-body='{}' data-confirm="…" data-then="/url".
  document.addEventListener("click", async (ev) => {
    const b = ev.target.closest("[data-call]");
    if (!b) return;
    ev.preventDefault();
    if (b.dataset.confirm && !window.confirm(b.dataset.confirm)) return;
    b.disabled = true;
    try {
      const data = await call(b.dataset.call, b.dataset.body);
      // A check's answer ({ok, message}, e.g. a connection test) is shown as it is.
      if (data && typeof data.ok === "boolean" && data.message !== undefined) {
        flash((data.ok ? "OK: " : "Failed: ") + data.message, !data.ok);
        return;
      }
      flash(data && data.cleared ? "Cleared: " + data.cleared.join(", ") : "Done");
      if (b.dataset.then) { location.href = b.dataset.then; return; }
      await refresh(true);
      if (b.closest("[data-live]") === null && !document.querySelector("[data-live]")) location.reload();
    } catch (e) {
      flash(e.message, true);
    } finally {
      b.disabled = false;
    }
  });

  // Forms: data-api="METHOD /api/.../{field}" turn their fields into a JSON body.
  document.addEventListener("submit", async (ev) => {
    const f = ev.target.closest("form[data-api]");
    if (!f) return;
    ev.preventDefault();
    const body = {};
    let spec = f.dataset.api;
    for (const el of f.elements) {
      if (!el.name || el.matches(":disabled") || "skip" in el.dataset) continue;
      let v = el.type === "checkbox" ? el.checked : el.value;
      if (el.dataset.type === "integer") { if (v === "") continue; v = parseInt(v, 10); }
      if (el.dataset.type === "json") {
        if (v.trim() === "") continue;
        try { v = JSON.parse(v); } catch (e) { flash(el.name + " is not JSON: " + e.message, true); return; }
      }
      if (el.dataset.type === "list") v = v.split(",").map((s) => s.trim()).filter(Boolean);
      if (spec.includes("{" + el.name + "}")) { spec = spec.replace("{" + el.name + "}", encodeURIComponent(v)); continue; }
      if (v === "" && el.type !== "checkbox") continue;
      body[el.name] = v;
    }
    try {
      const data = await call(spec, body);
      const show = f.dataset.show;
      if (show && data && data[show]) {
        window.prompt("Shown once; copy it now:", data[show]);
      }
      location.reload();
    } catch (e) {
      flash(e.message, true);
    }
  });

  // Forms offering two ways to give one thing (a connection's fields or its URI): the
  // fieldset of the way not chosen is hidden and disabled, so it is not sent.
  document.addEventListener("change", (ev) => {
    const r = ev.target.closest("input[name=_form]");
    if (!r) return;
    const form = r.form;
    for (const [value, id] of [["fields", "conn-fields"], ["uri", "conn-uri"]]) {
      const fs = form.querySelector("#" + id);
      if (!fs) continue;
      fs.hidden = r.value !== value;
      fs.disabled = r.value !== value;
    }
  });

  // Grid cells: the task instance of the cell's row (task) and column (run).
  function cellTarget(td) {
    const table = td.closest("table.grid"), tr = td.parentElement;
    const th = table.tHead.rows[0].cells[td.cellIndex];
    return { dag: table.dataset.dag, run: th.dataset.r, task: tr.dataset.t };
  }
  document.addEventListener("click", (ev) => {
    const td = ev.target.closest("table.grid td.c");
    if (!td) return;
    const t = cellTarget(td);
    location.href = "/dags/" + t.dag + "/runs/" + t.run + "/tasks/" + t.task;
  });
  document.addEventListener("mouseover", (ev) => {
    const td = ev.target.closest("table.grid td.c");
    if (!td || td.title) return;
    const t = cellTarget(td);
    td.title = decodeURIComponent(t.task) + " · " + decodeURIComponent(t.run) + " · " + td.className.replace(/.*s-/, "");
  });

  // Task groups in the grid: collapsed until opened; what is open is kept per DAG for the tab's
  // life (and across live refreshes). A row is hidden when any group it sits in is closed.
  function openGroups(table) {
    try { return new Set(JSON.parse(sessionStorage.getItem("tern-open:" + table.dataset.dag) || "[]")); } catch (_) { return new Set(); }
  }
  function applyGroups() {
    for (const table of document.querySelectorAll("table.grid")) {
      const open = openGroups(table);
      for (const tr of table.querySelectorAll("tr[data-in]")) {
        tr.hidden = tr.dataset.in.split(" ").some((g) => !open.has(g));
      }
      for (const tr of table.querySelectorAll("tr.grp")) {
        const b = tr.querySelector("button.grp-toggle");
        if (b) b.setAttribute("aria-expanded", open.has(tr.dataset.grp) ? "true" : "false");
      }
    }
  }
  document.addEventListener("click", (ev) => {
    const b = ev.target.closest("table.grid button.grp-toggle");
    if (!b) return;
    const table = b.closest("table.grid"), g = b.closest("tr").dataset.grp, open = openGroups(table);
    if (open.has(g)) open.delete(g); else open.add(g);
    sessionStorage.setItem("tern-open:" + table.dataset.dag, JSON.stringify([...open]));
    applyGroups();
  });
  document.addEventListener("DOMContentLoaded", applyGroups);

  // Times: the server writes <time datetime="…">… UTC</time>; with the preference "local"
  // (kept in this browser) they read in the browser's zone with its offset.
  const TZ_KEY = "tern-tz";
  const tzPref = () => localStorage.getItem(TZ_KEY) === "local" ? "local" : "UTC";
  const pad = (n) => String(n).padStart(2, "0");
  function showTimes() {
    const local = tzPref() === "local";
    for (const t of document.querySelectorAll("time[datetime]")) {
      if (t.dataset.utc === undefined) t.dataset.utc = t.textContent;
      if (!local) { t.textContent = t.dataset.utc; continue; }
      const d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) continue;
      const off = -d.getTimezoneOffset();
      const zone = (off >= 0 ? "+" : "-") + pad(Math.floor(Math.abs(off) / 60)) + ":" + pad(Math.abs(off) % 60);
      let text = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
      if (t.dataset.p !== "m") text += ":" + pad(d.getSeconds());
      t.textContent = text + " " + zone;
    }
  }
  document.addEventListener("DOMContentLoaded", () => {
    for (const el of document.querySelectorAll("[data-live][id]")) el._raw = el.innerHTML;
    const sel = document.getElementById("tz-pref");
    if (sel) {
      const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "browser";
      const opt = sel.querySelector("option[value=local]");
      if (opt) opt.textContent = "Local (" + zone + ")";
      sel.value = tzPref();
      sel.addEventListener("change", () => { localStorage.setItem(TZ_KEY, sel.value); showTimes(); });
    }
    showTimes();
  });

  // Live regions: elements with data-live and an id are swapped for fresh ones every few
  // seconds while the tab is visible, without reloading the page.
  let busy = false;
  async function refresh(force) {
    if (busy || (!force && document.hidden)) return;
    const live = document.querySelectorAll("[data-live][id]");
    if (!live.length) return;
    const active = document.activeElement;
    if (!force && active && active.closest && active.closest("[data-live]") && /INPUT|SELECT|TEXTAREA/.test(active.tagName)) return;
    busy = true;
    try {
      // A page that knows its version is sent again only when it changed (else 204).
      const meta = document.querySelector('meta[name="live-version"]');
      const headers = { "X-Tern-Refresh": "1" };
      if (meta && !force) headers["X-Tern-Version"] = meta.content;
      const r = await fetch(location.href, { credentials: "same-origin", headers });
      if (!r.ok || r.status === 204) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const freshMeta = doc.querySelector('meta[name="live-version"]');
      if (meta && freshMeta) meta.content = freshMeta.content;
      for (const el of live) {
        const fresh = doc.getElementById(el.id);
        // Compared with what the server sent last (the page shows times rewritten).
        if (fresh && fresh.innerHTML !== (el._raw === undefined ? el.innerHTML : el._raw)) {
          el.innerHTML = fresh.innerHTML;
          el._raw = fresh.innerHTML;
        }
      }
      applyGroups();
      showTimes();
    } catch (_) { /* offline for a moment */ } finally { busy = false; }
  }
  setInterval(refresh, 3000);

  // Live log: follows a try's log over server-sent events until the try ends. The whole text
  // is kept; a search shows only the lines holding the words typed (case-insensitive).
  function showLog(pre) {
    const q = (document.getElementById("log-search") || {}).value || "";
    const count = document.getElementById("log-matches");
    if (!q) {
      pre.textContent = pre._full;
      if (count) count.textContent = "";
      return;
    }
    const needle = q.toLowerCase();
    const lines = pre._full.split("\n");
    if (lines[lines.length - 1] === "") lines.pop();
    const hits = lines.filter((l) => l.toLowerCase().includes(needle));
    pre.textContent = hits.map((l) => l + "\n").join("");
    if (count) count.textContent = hits.length + " of " + lines.length + " lines";
  }
  function tail(pre, url) {
    if (pre._es) pre._es.close();
    pre._full = "";
    showLog(pre);
    const es = new EventSource(url, { withCredentials: true });
    pre._es = es;
    es.addEventListener("log", (e) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      // The text already ends its lines; an event may also end mid-line (a long line).
      pre._full += e.data;
      showLog(pre);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener("end", () => { es.close(); pre.dataset.ended = "1"; });
    es.onerror = () => { /* the browser reconnects from the last event id */ };
  }
  document.addEventListener("DOMContentLoaded", () => {
    const pre = document.getElementById("log-text");
    if (pre && pre.dataset.stream) tail(pre, pre.dataset.stream);
  });
  document.addEventListener("input", (ev) => {
    const pre = document.getElementById("log-text");
    if (ev.target.id === "log-search" && pre) showLog(pre);
  });
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest("a.show-log");
    const pre = document.getElementById("log-text");
    if (!a || !pre) return;
    ev.preventDefault();
    const t = document.getElementById("log-try");
    if (t) t.textContent = "try " + a.textContent;
    const d = document.getElementById("log-download");
    if (d) d.href = a.dataset.download;
    tail(pre, a.dataset.log);
  });
})();
