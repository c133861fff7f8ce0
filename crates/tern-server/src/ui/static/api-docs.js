// The browsable API docs: lists every route of /api/v1/openapi.json.
(async function () {
  const box = document.getElementById("ops");
  const r = await fetch("/api/v1/openapi.json", { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login?next=/api/v1/docs"; return; }
  const doc = await r.json();
  const esc = (s) => String(s == null ? "" : s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
  const schemas = (doc.components && doc.components.schemas) || {};
  const schemaText = (ref) => {
    const name = ref && ref.$ref ? ref.$ref.split("/").pop() : null;
    const s = name ? schemas[name] : ref;
    return esc(name || "") + "<pre class=code>" + esc(JSON.stringify(s && s.properties ? s.properties : s, null, 2)) + "</pre>";
  };
  let html = "";
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      html += `<details class="op"><summary><span class="m ${method}">${method.toUpperCase()}</span> <code>${esc(path)}</code> <span class="muted">${esc((op.tags || []).join(", "))}</span></summary>`;
      if (op.parameters && op.parameters.length) {
        html += "<h4>Parameters</h4><ul>" + op.parameters.map((p) => `<li><code>${esc(p.name)}</code> (${esc(p.in)}${p.required ? ", required" : ""}) ${esc(p.description)}</li>`).join("") + "</ul>";
      }
      const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
      if (body) html += "<h4>Body</h4>" + schemaText(body.schema);
      html += "<h4>Responses</h4><ul>" + Object.entries(op.responses || {}).map(([c, v]) => `<li><b>${esc(c)}</b> ${esc(v.description)}</li>`).join("") + "</ul></details>";
    }
  }
  box.innerHTML = html;
})();
