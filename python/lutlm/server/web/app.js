// The page at /: a client of this server's own OpenAI-style API. Plain JavaScript, no
// framework, no build step (see docs/ARCHITECTURE.md, Server). Model text is only ever
// put into the page as DOM text nodes (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "lutlm.conversations";
const SETTINGS = "lutlm.settings";
const SETTING_IDS = ["system-prompt", "temperature", "top-p", "max-tokens", "prompt-lookup"];

const state = {
  // Kept for this tab only (sessionStorage), sent as a header, never in a URL.
  key: sessionStorage.getItem("lutlm.key") || "",
  model: null,
  conversations: [],
  current: null,
  controller: null, // the AbortController of the request in flight
};

// ---- errors -------------------------------------------------------------------------

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// The message of an OpenAI-shaped error body, or the response's own text.
async function errorOf(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return new ApiError(resp.status, body.error.message);
  } catch (_) { /* not JSON: show the text */ }
  return new ApiError(resp.status, `${resp.status} ${resp.statusText}${text ? ": " + text.slice(0, 300) : ""}`);
}

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (state.key) headers["Authorization"] = `Bearer ${state.key}`;
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) {
    askForKey(state.key ? "The API key was refused; enter the right one." : null);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

// ---- API key and model info -----------------------------------------------------------

function askForKey(note) {
  $("key-form").hidden = false;
  if (note) showError(note);
  $("api-key").focus();
}

async function loadModel() {
  try {
    const resp = await api("/v1/models");
    const model = (await resp.json()).data[0];
    state.model = model;
    $("model-info").textContent = `${model.id} · context ${model.max_model_len} tokens`;
    $("key-form").hidden = true;
    clearError();
  } catch (e) {
    $("model-info").textContent = "not connected";
    if (e.status === 401) {
      if (!state.key) $("model-info").textContent = "API key needed";
    } else {
      showError(`Cannot reach the model: ${e.message}`);
      // 503: still loading (or busy); the page connects by itself once it is ready.
      if (e.status === 503) setTimeout(loadModel, 2000);
    }
  }
}

// ---- Markdown (a small subset, built as DOM nodes) ------------------------------------

// Inline spans: `code`, **bold**, *italic* / _italic_; everything else is plain text.
function inline(parent, text) {
  const re = /(`[^`\n]+`|\*\*[^*\n]+\*\*|\*[^*\s][^*\n]*\*|_[^_\s][^_\n]*_)/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    const t = m[0];
    let el;
    if (t.startsWith("`")) { el = document.createElement("code"); el.textContent = t.slice(1, -1); }
    else if (t.startsWith("**")) { el = document.createElement("strong"); inline(el, t.slice(2, -2)); }
    else { el = document.createElement("em"); inline(el, t.slice(1, -1)); }
    parent.append(el);
    last = m.index + t.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function codeBlock(code, lang) {
  const wrap = document.createElement("div");
  wrap.className = "code";
  const pre = document.createElement("pre");
  const el = document.createElement("code");
  el.textContent = code;
  if (lang) el.dataset.lang = lang;
  pre.append(el);
  const copy = document.createElement("button");
  copy.type = "button";
  copy.className = "copy";
  copy.textContent = "Copy";
  copy.addEventListener("click", () => copyText(code, copy));
  wrap.append(pre, copy);
  return wrap;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (_) {
    // Clipboard API refused (plain http on another host): select the text for Ctrl+C.
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = text.split("\n");
  let para = [];
  let list = null;
  const flushPara = () => {
    if (!para.length) return;
    const p = document.createElement("p");
    para.forEach((l, i) => { if (i) p.append(document.createElement("br")); inline(p, l); });
    out.append(p);
    para = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)/);
    if (fence) {
      flushPara(); list = null;
      const body = [];
      // An unclosed fence (still streaming) runs to the end of the text.
      for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) body.push(lines[i]);
      out.append(codeBlock(body.join("\n"), fence[1]));
      continue;
    }
    const item = line.match(/^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/);
    if (item) {
      flushPara();
      const tag = item[1] ? "ul" : "ol";
      if (!list || list.tagName.toLowerCase() !== tag) { list = document.createElement(tag); out.append(list); }
      const li = document.createElement("li");
      inline(li, item[3]);
      list.append(li);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flushPara(); list = null;
      const h = document.createElement("p");
      const strong = document.createElement("strong");
      inline(strong, heading[2]);
      h.append(strong);
      out.append(h);
      continue;
    }
    if (!line.trim()) { flushPara(); list = null; continue; }
    list = null;
    para.push(line);
  }
  flushPara();
  return out;
}

// ---- conversations (local storage) ----------------------------------------------------

function loadConversations() {
  try { state.conversations = JSON.parse(localStorage.getItem(STORE)) || []; }
  catch (_) { state.conversations = []; }
  state.current = state.conversations[0] || newConversation(false);
}

function saveConversations() {
  try { localStorage.setItem(STORE, JSON.stringify(state.conversations)); }
  catch (e) { showError(`Could not save the conversation in local storage: ${e.message}`); }
}

function newConversation(render = true) {
  const conv = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 6), title: "New conversation", messages: [] };
  state.conversations.unshift(conv);
  state.current = conv;
  if (render) { saveConversations(); renderAll(); $("prompt").focus(); }
  return conv;
}

function renderList() {
  const ul = $("conversation-list");
  ul.replaceChildren();
  for (const conv of state.conversations) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = conv.title;
    b.title = conv.title;
    b.setAttribute("aria-current", conv === state.current ? "true" : "false");
    b.addEventListener("click", () => {
      if (state.controller) return; // finish or stop the answer first
      state.current = conv; renderAll();
    });
    li.append(b);
    ul.append(li);
  }
}

function messageNode(msg) {
  const div = document.createElement("div");
  div.className = `msg ${msg.role}${msg.error ? " error-msg" : ""}`;
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = msg.role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "content";
  if (msg.role === "assistant" && !msg.error) body.append(renderMarkdown(msg.content));
  else { body.style.whiteSpace = "pre-wrap"; body.textContent = msg.error || msg.content; }
  div.append(role, body);
  if (msg.stats) {
    const s = document.createElement("div");
    s.className = "stats";
    s.textContent = msg.stats;
    div.append(s);
  }
  return div;
}

function renderMessages() {
  const box = $("messages");
  box.replaceChildren(...state.current.messages.map(messageNode));
  box.scrollTop = box.scrollHeight;
  const last = state.current.messages[state.current.messages.length - 1];
  $("regenerate").disabled = !!state.controller || !last || last.role !== "assistant";
}

function renderAll() {
  renderList();
  renderMessages();
}

// ---- chat ---------------------------------------------------------------------------

function numberSetting(id, parse) {
  const v = $(id).value.trim();
  return v === "" ? undefined : parse(v);
}

function chatBody(messages) {
  const system = $("system-prompt").value.trim();
  const body = {
    model: state.model ? state.model.id : undefined,
    messages: (system ? [{ role: "system", content: system }] : []).concat(
      messages.filter((m) => !m.error).map((m) => ({ role: m.role, content: m.content }))),
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberSetting("temperature", parseFloat),
    top_p: numberSetting("top-p", parseFloat),
    max_tokens: numberSetting("max-tokens", (v) => parseInt(v, 10)),
  };
  const lookup = numberSetting("prompt-lookup", (v) => parseInt(v, 10));
  if (lookup) body.prompt_lookup = lookup;
  return body;
}

// Yields the parsed `data:` payloads of a server-sent event stream.
async function* sseEvents(resp) {
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("new-chat").disabled = busy;
  $("regenerate").disabled = true;
}

async function answer() {
  const conv = state.current;
  const reply = { role: "assistant", content: "" };
  const history = conv.messages.slice();
  conv.messages.push(reply);
  renderMessages();
  const node = $("messages").lastElementChild;
  const content = node.querySelector(".content");
  const controller = new AbortController();
  state.controller = controller;
  setBusy(true);
  clearError();
  const start = performance.now();
  let first = null;
  let tokens = 0;
  let usage = null;
  let pending = false;
  const redraw = () => {
    pending = false;
    content.replaceChildren(renderMarkdown(reply.content));
    const box = $("messages");
    box.scrollTop = box.scrollHeight;
  };
  try {
    const resp = await api("/v1/chat/completions", {
      method: "POST", body: JSON.stringify(chatBody(history)), signal: controller.signal,
    });
    for await (const chunk of sseEvents(resp)) {
      if (chunk.error) throw new ApiError(500, chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        if (first === null) first = performance.now();
        tokens += 1;
        reply.content += delta.content;
        if (!pending) { pending = true; requestAnimationFrame(redraw); }
      }
    }
    reply.done = true;
  } catch (e) {
    if (e.name === "AbortError") {
      reply.stopped = true;
    } else {
      showError(e.message);
      // Text already streamed stays; the error shows in the banner and in the answer.
      if (reply.content) reply.stopped = true;
      else reply.error = `Error: ${e.message}`;
    }
  } finally {
    state.controller = null;
    const end = performance.now();
    const n = usage ? usage.completion_tokens : tokens;
    if (first !== null) {
      const rate = n > 1 ? ((n - 1) / ((end - first) / 1000)).toFixed(1) : "–";
      reply.stats = `${n} tokens · ${rate} tokens/s · first token after ${((first - start) / 1000).toFixed(2)} s` +
        (reply.stopped ? " · stopped" : "");
    } else if (reply.stopped) {
      reply.stats = "stopped before the first token";
    }
    if (conv.title === "New conversation" && history.length) {
      conv.title = history[history.length - 1].content.slice(0, 40);
    }
    saveConversations();
    setBusy(false);
    renderAll();
  }
}

function send() {
  const text = $("prompt").value.trim();
  if (!text || state.controller) return;
  $("prompt").value = "";
  state.current.messages.push({ role: "user", content: text });
  answer();
}

function regenerate() {
  const msgs = state.current.messages;
  if (state.controller || !msgs.length || msgs[msgs.length - 1].role !== "assistant") return;
  msgs.pop();
  answer();
}

function stop() {
  // Aborting the fetch closes the connection; the server aborts the request when its
  // client disconnects, so the engine stops generating.
  if (state.controller) state.controller.abort();
  if (state.taskController) state.taskController.abort();
}

// ---- compiler tasks ------------------------------------------------------------------

function updateTaskForm() {
  const kind = $("task-kind").value;
  $("target-label").hidden = kind !== "transpile";
  $("function-label").hidden = kind !== "decompile";
  $("binary-label").hidden = kind !== "decompile";
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function runTask() {
  if (state.taskController) return;
  const kind = $("task-kind").value;
  const input = $("task-input").value;
  const file = $("task-binary").files[0];
  const body = {
    model: state.model ? state.model.id : undefined,
    max_tokens: numberSetting("max-tokens", (v) => parseInt(v, 10)),
    temperature: numberSetting("temperature", parseFloat),
    top_p: numberSetting("top-p", parseFloat),
  };
  const lookup = numberSetting("prompt-lookup", (v) => parseInt(v, 10));
  if (lookup) body.prompt_lookup = lookup;
  try {
    if (kind === "optimize-ir") body.ir = input;
    else if (kind === "transpile") { body.asm = input; body.target = $("task-target").value; }
    else if (file && kind === "decompile") {
      body.binary = await base64Of(file);
      body.function = $("task-function").value.trim();
    } else body.asm = input;
  } catch (e) { showError(`Could not read the file: ${e.message}`); return; }
  const controller = new AbortController();
  state.taskController = controller;
  $("task-run").disabled = true;
  $("task-stop").disabled = false;
  $("task-result").hidden = true;
  clearError();
  $("task-run").textContent = "Running…";
  try {
    const resp = await api(`/v1/tasks/${kind}`, { method: "POST", body: JSON.stringify(body), signal: controller.signal });
    showTaskResult(await resp.json());
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
  } finally {
    state.taskController = null;
    $("task-run").disabled = false;
    $("task-stop").disabled = true;
    $("task-run").textContent = "Run";
  }
}

function showTaskResult(result) {
  const v = result.verification || {};
  const status = $("task-status");
  status.textContent = v.status;
  status.className = `status ${v.status}`;
  let message = "";
  if (v.status === "failed") message = v.message || "";
  else if (v.status === "unverified") message = v.tool ? `missing tool: ${v.tool}${v.message ? " (" + v.message + ")" : ""}` : v.message || "";
  else message = v.message || "";
  $("task-message").textContent = message;
  const d = v.details || {};
  if (result.task === "optimize-ir" && d.oz_object_size != null) {
    const ours = d.object_size;
    let text = `Object size: ${ours != null ? ours : "?"} bytes against ${d.oz_object_size} bytes with -Oz`;
    if (ours != null && d.oz_object_size) {
      const pct = ((ours - d.oz_object_size) / d.oz_object_size * 100).toFixed(1);
      text += ` (${pct > 0 ? "+" : ""}${pct}%)`;
    }
    if (d.chosen) text += `; kept: ${d.chosen}`;
    $("task-size").textContent = text;
    $("task-size").hidden = false;
  } else {
    $("task-size").hidden = true;
  }
  $("task-answer").textContent = result.answer != null ? result.answer : "(no answer could be extracted)";
  $("task-text").textContent = result.text || "";
  $("task-result").hidden = false;
}

// ---- wiring --------------------------------------------------------------------------

function showView(tasks) {
  $("chat-view").hidden = tasks;
  $("tasks-view").hidden = !tasks;
  $("tab-chat").setAttribute("aria-pressed", String(!tasks));
  $("tab-tasks").setAttribute("aria-pressed", String(tasks));
}

function restoreSettings() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(SETTINGS)) || {}; } catch (_) { /* defaults */ }
  for (const id of SETTING_IDS) {
    if (saved[id] !== undefined) $(id).value = saved[id];
    $(id).addEventListener("change", () => {
      const now = {};
      for (const k of SETTING_IDS) now[k] = $(k).value;
      localStorage.setItem(SETTINGS, JSON.stringify(now));
    });
  }
}

function init() {
  restoreSettings();
  loadConversations();
  renderAll();
  updateTaskForm();
  $("chat-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") stop(); });
  $("stop").addEventListener("click", stop);
  $("task-stop").addEventListener("click", stop);
  $("regenerate").addEventListener("click", regenerate);
  $("new-chat").addEventListener("click", () => newConversation());
  $("tab-chat").addEventListener("click", () => showView(false));
  $("tab-tasks").addEventListener("click", () => showView(true));
  $("toggle-settings").addEventListener("click", () => {
    const open = $("settings").hidden;
    $("settings").hidden = !open;
    $("toggle-settings").setAttribute("aria-expanded", String(open));
  });
  $("error-close").addEventListener("click", clearError);
  $("task-kind").addEventListener("change", updateTaskForm);
  $("task-form").addEventListener("submit", (e) => { e.preventDefault(); runTask(); });
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("lutlm.key", state.key);
    loadModel();
  });
  window.addEventListener("unhandledrejection", (e) => showError(String(e.reason && e.reason.message || e.reason)));
  loadModel();
}

init();
