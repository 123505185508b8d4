// The interactive API page (C6): reads openapi.json, lists the operations by
// tag with their schemas, and sends requests. Plain DOM, no dependencies, so it
// ships inside the package and needs no network beyond the daemon itself.
"use strict";

let spec = null;

// Build an element; children may be strings, nodes, arrays or null. Text goes in
// as text nodes, never as HTML.
// Descriptions mark code with `backticks`: shown as <code>, the rest as text
// (never parsed as HTML).
function prose(text) {
  return String(text).split("`").map((part, i) => (i % 2 ? el("code", {}, part) : part));
}

function el(tag, attrs = {}, ...kids) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (v !== false && v != null) node.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) if (kid != null) node.append(kid);
  return node;
}

function authHeaders() {
  const key = document.getElementById("key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function load() {
  const status = document.getElementById("status");
  try {
    const resp = await fetch("openapi.json", { headers: authHeaders() });
    if (!resp.ok) throw new Error(`${resp.status}: ${await resp.text()}`);
    spec = await resp.json();
  } catch (err) {
    status.textContent = `Could not load openapi.json (${err.message}). ` +
      "If the server needs an API key, enter it above.";
    return;
  }
  status.remove();
  render();
}

const refName = (s) => (s && s.$ref ? s.$ref.split("/").pop() : null);
const resolve = (s) => (refName(s) ? spec.components.schemas[refName(s)] : s || {});

// The one non-null branch of an optional field, for form inputs and notes.
function plain(schema) {
  const s = resolve(schema);
  const branches = s.anyOf || s.oneOf;
  if (branches) {
    const real = branches.filter((b) => b.type !== "null");
    if (real.length === 1) return resolve(real[0]);
  }
  return s;
}

function typeLabel(s) {
  const name = refName(s);
  if (name) return el("a", { href: `#schema-${name}` }, name);
  const branches = s.anyOf || s.oneOf;
  if (branches) return branches.map((b, i) => [i ? " | " : null, typeLabel(b)]);
  if (s.type === "array") return ["array of ", typeLabel(s.items || {})];
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (!s.type) return "any";
  return s.format ? `${s.type} (${s.format})` : s.type;
}

function notes(prop) {
  const s = plain(prop);
  const bits = [];
  if (prop.description || s.description) bits.push(prop.description || s.description);
  if (prop.default !== undefined && prop.default !== null) {
    bits.push(`default ${JSON.stringify(prop.default)}`);
  }
  if (s.minimum !== undefined || s.maximum !== undefined) {
    bits.push(`range ${s.minimum ?? "…"} to ${s.maximum ?? "…"}`);
  }
  return bits.join("; ");
}

function schemaView(schema) {
  const s = resolve(schema);
  if (!s.properties) return el("div", {}, typeLabel(schema));
  const required = new Set(s.required || []);
  return el("table", {},
    el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "notes")),
    Object.entries(s.properties).map(([name, prop]) => el("tr", {},
      el("td", {}, name, required.has(name) ? " *" : null),
      el("td", {}, typeLabel(prop)),
      el("td", {}, prose(notes(prop))))));
}

function requestView(op) {
  const content = op.requestBody && op.requestBody.content;
  if (!content) return null;
  return [el("h4", {}, "Request body"), Object.entries(content).map(([type, media]) =>
    [el("div", { class: "media" }, type), schemaView(media.schema || {})])];
}

function responsesView(op) {
  const rows = Object.entries(op.responses).map(([code, r]) => el("tr", {},
    el("td", {}, code), el("td", {}, prose(r.description)),
    el("td", {}, Object.entries(r.content || {}).map(([type, media]) =>
      el("div", {}, type, media.schema && Object.keys(media.schema).length
        ? [" → ", typeLabel(media.schema)] : null)))));
  return [el("h4", {}, "Responses"), el("table", {}, rows)];
}

// Input names are "where.key": path.job_id, query.limit, header.X, form.file, json.
function inputFor(schema, name) {
  const s = plain(schema);
  if (s.format === "binary") return el("input", { type: "file", name });
  const choices = s.enum || (s.type === "boolean" ? [true, false] : null);
  if (choices) {
    return el("select", { name }, el("option", { value: "" }, ""),
      choices.map((v) => el("option", { value: String(v) }, String(v))));
  }
  if (s.type === "array" && s.items && s.items.enum) {
    return el("select", { name, multiple: true, size: s.items.enum.length },
      s.items.enum.map((v) => el("option", { value: v }, v)));
  }
  return el("input", { type: "text", name, placeholder: s.type || "" });
}

function row(label, hint, input) {
  return [el("label", {}, label, hint ? el("small", {}, hint) : null), input];
}

function tryForm(path, method, op) {
  const form = el("form", { class: "try" });
  for (const p of op.parameters || []) {
    const hint = `${p.in}${p.required ? ", required" : ""}`;
    form.append(...row(p.name, hint, inputFor(p.schema || {}, `${p.in}.${p.name}`)));
  }
  const content = (op.requestBody && op.requestBody.content) || {};
  if (content["multipart/form-data"]) {
    const s = resolve(content["multipart/form-data"].schema);
    const required = new Set(s.required || []);
    for (const [name, prop] of Object.entries(s.properties || {})) {
      form.append(...row(name, required.has(name) ? "required" : "", inputFor(prop, `form.${name}`)));
    }
  } else if (content["application/json"]) {
    const s = resolve(content["application/json"].schema);
    const example = Object.fromEntries(Object.keys(s.properties || {}).slice(0, 1).map((k) => [k, ""]));
    form.append(...row("body", "JSON", el("textarea", { name: "json", rows: 3 },
      JSON.stringify(example))));
  }
  const out = el("pre", { class: "out" });
  const stop = el("button", { type: "button", disabled: true }, "Stop");
  form.append(el("div", { class: "buttons" }, el("button", { type: "submit" }, "Send"), stop), out);
  let controller = null;
  stop.addEventListener("click", () => controller && controller.abort());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (controller) controller.abort();
    controller = new AbortController();
    stop.disabled = false;
    await send(form, path, method, out, controller.signal);
    stop.disabled = true;
  });
  return el("details", { class: "tryit", id: `${op.operationId}-try` },
    el("summary", {}, "Try it"), form);
}

function buildRequest(form, path, method) {
  let url = path;
  const query = new URLSearchParams();
  const headers = authHeaders();
  const parts = new FormData();
  let body;
  for (const [name, value] of new FormData(form)) {
    // Absent fields are not sent, as the OpenAI SDK does: the server's defaults apply.
    if (value === "" || (value instanceof File && !value.name)) continue;
    const dot = name.indexOf(".");
    const where = dot < 0 ? name : name.slice(0, dot);
    const key = name.slice(dot + 1);
    if (where === "path") url = url.replace(`{${key}}`, encodeURIComponent(value));
    else if (where === "query") query.append(key, value);
    else if (where === "header") headers[key] = value;
    else if (where === "form") { parts.append(key, value); body = parts; }
    else if (where === "json") { headers["Content-Type"] = "application/json"; body = value; }
  }
  const qs = query.toString();
  return { url: qs ? `${url}?${qs}` : url, init: { method: method.toUpperCase(), headers, body } };
}

async function send(form, path, method, out, signal) {
  const { url, init } = buildRequest(form, path, method);
  out.textContent = `${init.method} ${url}\n`;
  try {
    const resp = await fetch(url, { ...init, signal });
    const type = resp.headers.get("Content-Type") || "";
    out.textContent += `${resp.status} ${resp.statusText}  ${type}\n\n`;
    const head = out.textContent;
    // Read as it arrives, so event streams show up live.
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
      out.textContent = head + text;
    }
    if (type.startsWith("application/json")) {
      try { out.textContent = head + JSON.stringify(JSON.parse(text), null, 2); } catch { /* as is */ }
    }
  } catch (err) {
    out.textContent += `\n${err.name === "AbortError" ? "stopped" : err.message}`;
  }
}

function opView({ path, method, op }) {
  return el("details", { class: `op ${method}`, id: op.operationId },
    el("summary", {}, el("span", { class: "method" }, method.toUpperCase()),
      el("code", {}, path), el("span", { class: "summary" }, op.summary || "")),
    op.description ? el("p", {}, prose(op.description)) : null,
    requestView(op), responsesView(op), tryForm(path, method, op));
}

function render() {
  document.getElementById("version").textContent = spec.info.version;
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push({ path, method, op });
    }
  }
  const main = document.getElementById("ops");
  for (const [tag, ops] of byTag) main.append(el("h2", {}, tag), ...ops.map(opView));
  const names = Object.keys(spec.components.schemas).sort();
  document.getElementById("schemas").append(el("h2", {}, "Schemas"), ...names.map((name) =>
    el("details", { id: `schema-${name}` }, el("summary", {}, name),
      schemaView({ $ref: `#/components/schemas/${name}` }))));
  openTarget();
}

// A link (#schema-Name, #operationId) opens its <details> and those around it.
function openTarget() {
  let node = location.hash && document.getElementById(location.hash.slice(1));
  const target = node;
  for (; node; node = node.parentElement) if (node.tagName === "DETAILS") node.open = true;
  if (target) target.scrollIntoView();
}

window.addEventListener("hashchange", openTarget);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("key").addEventListener("change", () => {
    if (!spec) load();
  });
  load();
});
