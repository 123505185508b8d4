// The Sona dashboard: plain JS, no framework, no network beyond this server.
// It lives on the all-jobs feed (GET v1/events, read with fetch so it can send
// the API key) and the JSON API. All URLs are relative: it also works behind a
// reverse proxy under a prefix. Text from the server only ever goes through
// textContent, never innerHTML.
"use strict";

(() => {
  const KEY_STORE = "sona.apiKey";
  const FORMATS = { text: "txt", json: "json", verbose_json: "verbose.json", srt: "srt",
    vtt: "vtt", tsv: "tsv", jsonl: "jsonl" };
  const ACTIVE = new Set(["queued", "processing"]);
  const $ = (id) => document.getElementById(id);

  const jobs = new Map(); // id → job object (A2)
  const cards = new Map(); // id → <li>
  let retryMs = 2000;
  let lastEventId = null;

  // ---- small DOM helpers --------------------------------------------------
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "dataset") Object.assign(node.dataset, v);
      else if (k in node) node[k] = v;
      else node.setAttribute(k, v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  let toastTimer = 0;
  function toast(message) {
    const box = $("toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function clock(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const sec = (s % 60).toFixed(1).padStart(4, "0");
    return (h ? `${h}:${String(m).padStart(2, "0")}` : `${m}`) + `:${sec}`;
  }

  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    const today = new Date().toDateString() === d.toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString();
  }

  // ---- API key and requests -----------------------------------------------
  const apiKey = () => sessionStorage.getItem(KEY_STORE) || "";
  let keyWaiters = [];

  function authHeaders(extra) {
    const headers = new Headers(extra || {});
    if (apiKey()) headers.set("Authorization", `Bearer ${apiKey()}`);
    return headers;
  }

  function openKeyDialog(reason) {
    if (reason) $("key-reason").textContent = reason;
    $("key-input").value = "";
    if (!$("key-dialog").open) $("key-dialog").showModal();
    $("key-input").focus();
  }

  /** Resolves once the user has saved a key (Cancel leaves it pending). */
  function askForKey() {
    const reason = apiKey() ? "That API key was refused. Enter another one."
      : "This server requires an API key.";
    document.body.dataset.auth = "needed";
    openKeyDialog(reason);
    return new Promise((resolve) => keyWaiters.push(resolve));
  }

  function saveKey(key) {
    sessionStorage.setItem(KEY_STORE, key);
    document.body.dataset.auth = "given";
    const waiters = keyWaiters;
    keyWaiters = [];
    waiters.forEach((resolve) => resolve());
  }

  /** fetch with the API key; on 401 ask for a key and try again. */
  async function api(path, options = {}) {
    for (;;) {
      const resp = await fetch(path, { ...options, headers: authHeaders(options.headers) });
      if (resp.status !== 401) return resp;
      await askForKey();
    }
  }

  async function errorOf(resp) {
    try {
      const body = await resp.json();
      return (body.error && body.error.message) || `HTTP ${resp.status}`;
    } catch {
      return `HTTP ${resp.status}`;
    }
  }

  // ---- the feed -------------------------------------------------------------
  function setConn(state, text) {
    const conn = $("conn");
    conn.dataset.state = state;
    conn.textContent = text;
    document.body.dataset.feed = state;
  }

  function parseBlock(block) {
    const ev = { event: "message", data: "", id: null };
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const i = line.indexOf(":");
      const name = i < 0 ? line : line.slice(0, i);
      let value = i < 0 ? "" : line.slice(i + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") ev.data += (ev.data ? "\n" : "") + value;
      else if (name === "event") ev.event = value;
      else if (name === "id") ev.id = value;
      else if (name === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    return ev;
  }

  function onEvent(ev) {
    if (ev.id !== null) lastEventId = ev.id;
    if (!ev.data) return;
    const data = JSON.parse(ev.data);
    if (ev.event === "snapshot") {
      const connects = Number(document.body.dataset.connects || 0) + 1;
      document.body.dataset.connects = String(connects);
      document.body.dataset.resumedFrom = data.last_event_id || "";
      // The snapshot replaces what we held (jobs deleted while we were away go).
      const fresh = new Set(data.jobs.map((job) => job.id));
      for (const id of [...jobs.keys()]) if (!fresh.has(id)) removeJob(id);
      data.jobs.forEach(upsertJob);
      renderState(data.state);
      setConn("live", "● live");
    } else if (ev.event === "job") {
      upsertJob(data);
    } else if (ev.event === "removed") {
      removeJob(data.id);
    } else if (ev.event === "state") {
      renderState(data);
    }
  }

  async function readFeed() {
    const headers = authHeaders();
    if (lastEventId) headers.set("Last-Event-ID", lastEventId);
    const resp = await fetch("v1/events", { headers, cache: "no-store" });
    if (resp.status === 401) {
      setConn("locked", "API key needed");
      await askForKey();
      return true; // reconnect at once, with the key
    }
    if (!resp.ok || !resp.body) throw new Error(`feed: ${await errorOf(resp)}`);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return false;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        onEvent(parseBlock(buffer.slice(0, cut)));
        buffer = buffer.slice(cut + 2);
      }
    }
  }

  async function runFeed() {
    for (;;) {
      try {
        if (await readFeed()) continue;
      } catch (err) {
        console.debug("feed interrupted", err);
      }
      if (document.body.dataset.feed !== "locked") setConn("reconnecting", "reconnecting…");
      await sleep(retryMs);
    }
  }

  // ---- server state and models ------------------------------------------------
  function renderModels(models) {
    const list = $("models");
    list.replaceChildren();
    if (!models.length) list.append(el("li", { className: "muted" }, "none"));
    for (const m of models) {
      const unload = el("button", { type: "button", className: "secondary small",
        textContent: "Unload", title: `Unload ${m.id}` });
      unload.addEventListener("click", () => unloadModel(m.id, unload));
      list.append(el("li", { className: "model", dataset: { id: m.id } },
        el("span", { className: "model-id", textContent: m.id }),
        m.in_use ? el("span", { className: "badge processing", textContent: "in use" }) : null,
        unload));
    }
    $("model-list").replaceChildren(...models.map((m) => el("option", { value: m.id })));
  }

  function renderState(state) {
    $("queue-size").textContent = String(state.queue_size);
    $("processing").textContent = String(state.processing);
    $("worker").textContent =
      state.role === "api" ? "on worker nodes" : state.worker_running ? "running" : "stopped";
    $("worker").dataset.running = String(state.worker_running);
    renderModels(state.models);
  }

  async function refreshModels() {
    const resp = await api("v1/models");
    // Aliases (whisper-1 → the default model) are not loaded models to unload.
    if (resp.ok) renderModels((await resp.json()).data.filter((m) => !m.alias_for));
  }

  async function loadModel(event) {
    event.preventDefault();
    const name = $("load-name").value.trim();
    const msg = $("models-msg");
    $("load-button").disabled = true;
    msg.textContent = `Loading ${name}…`;
    try {
      const resp = await api("v1/models/load", { method: "POST",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ model: name }) });
      if (resp.ok) {
        const model = await resp.json();
        msg.textContent = `Loaded ${model.id} in ${model.load_seconds} s.`;
        $("load-name").value = "";
      } else {
        msg.textContent = await errorOf(resp);
      }
      await refreshModels();
    } finally {
      $("load-button").disabled = false;
    }
  }

  async function unloadModel(id, button) {
    button.disabled = true;
    const resp = await api(`v1/models/${encodeURIComponent(id)}`, { method: "DELETE" });
    $("models-msg").textContent = resp.ok ? `Unloaded ${id}.` : await errorOf(resp);
    await refreshModels();
  }

  // ---- jobs ---------------------------------------------------------------------
  /** Realtime factor: processing time ÷ audio time (below 1 is faster than real time).
   * Processing time runs from the claim (started_at), so time spent queued is left out. */
  function realtimeFactor(job) {
    if (!job.started_at || !job.duration) return null;
    const audio = job.status === "completed" ? job.duration : job.processed_seconds;
    if (!audio) return null;
    const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    return (end - Date.parse(job.started_at)) / 1000 / audio;
  }

  /** Where a job stands: its place in the queue and the daemon's estimate of the
   * time left (queue_position, eta_s). */
  function standing(job) {
    const parts = [];
    const n = job.queue_position;
    if (n) {
      const suffix = n % 100 >= 10 && n % 100 <= 20 ? "th"
        : ({ 1: "st", 2: "nd", 3: "rd" })[n % 10] || "th";
      parts.push(`${n}${suffix} in queue`);
    }
    if (job.eta_s !== null && job.eta_s !== undefined) parts.push(`about ${span(job.eta_s)} left`);
    return parts.join(", ");
  }

  function span(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return s % 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s / 60} min`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function buildCard(id) {
    const open = el("button", { type: "button", className: "open", textContent: "Transcript" });
    open.addEventListener("click", () => openTranscript(id));
    const cancel = el("button", { type: "button", className: "cancel danger",
      textContent: "Cancel" });
    cancel.addEventListener("click", () => cancelJob(id, cancel));
    return el("li", { className: "job", dataset: { id } },
      el("div", { className: "job-head" },
        el("span", { className: "name" }),
        el("span", { className: "badge status" })),
      el("div", { className: "bar-row" },
        el("progress", { className: "bar", max: 1, value: 0 }),
        el("span", { className: "pct" })),
      el("div", { className: "standing", title: "an estimate from the worker's measured speed" }),
      el("div", { className: "meta" }),
      el("p", { className: "text" }),
      el("p", { className: "error" }),
      el("div", { className: "actions" }, open, cancel));
  }

  function renderJob(job) {
    let card = cards.get(job.id);
    if (!card) {
      card = buildCard(job.id);
      cards.set(job.id, card);
    }
    const q = (sel) => card.querySelector(sel);
    card.dataset.status = job.status;
    q(".name").textContent = job.file_name || job.id;
    q(".name").title = `job ${job.id}`;
    const badge = q(".status");
    badge.textContent = job.cancel_requested && job.status === "processing"
      ? "cancelling" : job.status;
    badge.className = `badge status ${job.status}`;
    q(".bar").value = job.progress;
    q(".pct").textContent = `${Math.round(job.progress * 100)}%`;
    q(".standing").textContent = standing(job);
    const rtf = realtimeFactor(job);
    const meta = [clock(job.duration), job.model || "default model", when(job.created_at)];
    if (rtf !== null) meta.splice(1, 0, `RTF ${rtf.toFixed(2)}`);
    if (job.cached) meta.push("cached");
    q(".meta").textContent = meta.join(" · ");
    const text = job.text || "";
    q(".text").textContent = job.status === "processing" && text.length > 240
      ? `…${text.slice(-240)}` : text;
    q(".error").textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
    q(".open").hidden = job.status !== "completed";
    q(".cancel").hidden = !ACTIVE.has(job.status);
    q(".cancel").disabled = job.cancel_requested;
  }

  let orderQueued = false;
  function placeCards() {
    orderQueued = false;
    const list = $("jobs");
    const sorted = [...jobs.values()].sort((a, b) => Date.parse(b.created_at)
      - Date.parse(a.created_at) || (a.id < b.id ? 1 : -1));
    sorted.forEach((job, i) => {
      const card = cards.get(job.id);
      if (list.children[i] !== card) list.insertBefore(card, list.children[i] || null);
    });
    $("jobs-empty").hidden = jobs.size > 0;
    const active = sorted.filter((j) => ACTIVE.has(j.status)).length;
    $("jobs-count").textContent = jobs.size ? `${jobs.size} shown, ${active} active` : "";
  }

  function upsertJob(job) {
    jobs.set(job.id, job);
    renderJob(job);
    if (!orderQueued) {
      orderQueued = true;
      queueMicrotask(placeCards);
    }
  }

  function removeJob(id) {
    jobs.delete(id);
    const card = cards.get(id);
    if (card) card.remove();
    cards.delete(id);
    if (!orderQueued) {
      orderQueued = true;
      queueMicrotask(placeCards);
    }
  }

  async function cancelJob(id, button) {
    button.disabled = true;
    const resp = await api(`v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (resp.ok) upsertJob(await resp.json());
    else toast(await errorOf(resp));
  }

  // Processing jobs' realtime factor moves with the clock, not only with events.
  setInterval(() => {
    for (const job of jobs.values()) if (job.status === "processing") renderJob(job);
  }, 1000);

  // ---- uploads --------------------------------------------------------------------
  function formFor(file) {
    const form = new FormData();
    form.append("file", file, file.name);
    const model = $("opt-model").value.trim();
    const language = $("opt-language").value.trim().toLowerCase();
    if (model) form.append("model", model);
    if (language) form.append("language", language);
    if ($("opt-words").checked) form.append("word_timestamps", "true");
    if ($("opt-diarize").value !== "none") form.append("diarize", $("opt-diarize").value);
    return form;
  }

  /** POST one file with upload progress (XHR: fetch cannot report it). */
  function post(form, bar) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "v1/jobs");
      if (apiKey()) xhr.setRequestHeader("Authorization", `Bearer ${apiKey()}`);
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch { body = null; }
        resolve({ status: xhr.status, body });
      };
      xhr.onerror = () => reject(new Error("the upload failed: network error"));
      xhr.send(form);
    });
  }

  async function uploadOne(file) {
    const bar = el("progress", { max: 1, value: 0 });
    const note = el("span", { className: "note", textContent: "uploading…" });
    const row = el("li", {}, el("span", { className: "name", textContent: file.name }), bar, note);
    $("uploads").prepend(row);
    try {
      for (;;) {
        const { status, body } = await post(formFor(file), bar);
        if (status === 401) { await askForKey(); continue; }
        if (status === 200 || status === 202) {
          upsertJob(body);
          note.textContent = status === 202 ? "queued" : "already submitted";
          setTimeout(() => row.remove(), 1500); // the job's card has taken over
          return;
        }
        row.classList.add("failed");
        note.textContent = (body && body.error && body.error.message) || `HTTP ${status}`;
        return;
      }
    } catch (err) {
      row.classList.add("failed");
      note.textContent = err.message;
    }
  }

  async function upload(event) {
    event.preventDefault();
    const files = [...$("files").files];
    $("upload-button").disabled = true;
    try {
      for (const file of files) await uploadOne(file);
    } finally {
      $("upload-button").disabled = false;
      $("files").value = ""; // the options stay for the next upload
      $("drop-text").textContent = "Choose audio files, or drop them here";
    }
  }

  function showChosen() {
    const n = $("files").files.length;
    $("drop-text").textContent = n === 1 ? $("files").files[0].name
      : n ? `${n} files chosen` : "Choose audio files, or drop them here";
  }

  function setupDrop() {
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      $("files").files = e.dataTransfer.files;
      showChosen();
    });
    $("files").addEventListener("change", showChosen);
  }

  // ---- transcript -----------------------------------------------------------------
  let audioUrl = null;
  let stopAt = null;

  function clearAudio() {
    const audio = $("t-audio");
    audio.pause();
    audio.removeAttribute("src");
    audio.load();
    if (audioUrl) URL.revokeObjectURL(audioUrl);
    audioUrl = null;
    stopAt = null;
  }

  /** Without a key the player streams with Range requests; with one it cannot
   * send the header, so the page fetches the file and plays a blob. */
  async function setupAudio(id) {
    const audio = $("t-audio");
    const msg = $("t-audio-msg");
    const url = `v1/jobs/${encodeURIComponent(id)}/audio`;
    const resp = await api(url, { method: apiKey() ? "GET" : "HEAD" });
    if (!resp.ok) {
      audio.hidden = true;
      msg.hidden = false;
      msg.textContent = resp.status === 404 ? "The audio is no longer retained."
        : await errorOf(resp);
      return;
    }
    audio.hidden = false;
    msg.hidden = true;
    if (apiKey()) {
      audioUrl = URL.createObjectURL(await resp.blob());
      audio.src = audioUrl;
    } else {
      audio.src = url;
    }
  }

  function playSegment(item) {
    const audio = $("t-audio");
    if (audio.hidden || !audio.src) return;
    audio.currentTime = Number(item.dataset.start);
    stopAt = Number(item.dataset.end);
    audio.play().catch((err) => console.debug("play refused", err));
  }

  function markPlaying() {
    const audio = $("t-audio");
    const t = audio.currentTime;
    if (stopAt !== null && t >= stopAt) {
      audio.pause();
      stopAt = null;
    }
    for (const item of $("t-segments").children) {
      const on = t >= Number(item.dataset.start) && t < Number(item.dataset.end);
      item.classList.toggle("playing", on && !audio.paused);
    }
  }

  function downloadButtons(job) {
    const stem = (job.file_name || job.id).replace(/\.[^.]*$/, "") || job.id;
    return Object.entries(FORMATS).map(([fmt, ext]) => {
      const b = el("button", { type: "button", className: "secondary small", textContent: fmt,
        dataset: { format: fmt } });
      b.addEventListener("click", async () => {
        const resp = await api(`v1/jobs/${encodeURIComponent(job.id)}/transcript?format=${fmt}`);
        if (!resp.ok) { toast(await errorOf(resp)); return; }
        const url = URL.createObjectURL(await resp.blob());
        const a = el("a", { href: url, download: `${stem}.${ext}` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 30000);
      });
      return b;
    });
  }

  /** Open a job's transcript; with ``at`` (a search hit's start and end) the
   * player starts at that segment. A job the feed does not hold is fetched. */
  async function openTranscript(id, at = null) {
    let job = jobs.get(id);
    if (!job) {
      const resp = await api(`v1/jobs/${encodeURIComponent(id)}`);
      if (!resp.ok) { toast(await errorOf(resp)); return; }
      job = await resp.json();
    }
    clearAudio();
    $("t-title").textContent = job.file_name || job.id;
    const rtf = realtimeFactor(job);
    $("t-meta").textContent = [`job ${job.id}`, clock(job.duration), job.language,
      job.model, rtf === null ? null : `RTF ${rtf.toFixed(2)}`].filter(Boolean).join(" · ");
    $("t-downloads").replaceChildren(el("span", { className: "muted", textContent: "Download:" }),
      ...downloadButtons(job));
    const list = $("t-segments");
    list.replaceChildren(el("li", { className: "muted", textContent: "Loading…" }));
    $("transcript").showModal();
    const [resp] = await Promise.all([
      api(`v1/jobs/${encodeURIComponent(id)}/transcript?format=verbose_json`),
      setupAudio(id),
    ]);
    if (!resp.ok) {
      list.replaceChildren(el("li", { className: "error", textContent: await errorOf(resp) }));
      return;
    }
    const body = await resp.json();
    list.replaceChildren(...(body.segments || []).map((s) => {
      const item = el("li", { className: "segment", tabIndex: 0,
        dataset: { start: s.start, end: s.end }, title: "Play this part" },
        el("span", { className: "time", textContent: `${clock(s.start)} → ${clock(s.end)}` }),
        s.speaker ? el("span", { className: "speaker", textContent: s.speaker }) : null,
        el("span", { className: "seg-text", textContent: s.text.trim() }));
      item.addEventListener("click", () => playSegment(item));
      item.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); playSegment(item); }
      });
      return item;
    }));
    if (!list.children.length) list.append(el("li", { className: "muted" }, "(no speech)"));
    if (at) playFound(list, at);
  }

  function playFound(list, at) {
    const item = [...list.children].find((i) => Number(i.dataset.start) === at.start)
      || el("li", { dataset: { start: at.start, end: at.end } });
    item.classList.add("found");
    if (item.isConnected) item.scrollIntoView({ block: "center" });
    playSegment(item);
  }

  // ---- search -----------------------------------------------------------------------
  let searchCursor = null;

  /** ``text`` with its ``marks`` ([start, end) in code points) as <mark>
   * elements: text nodes only, never markup from the transcript. */
  function marked(text, marks) {
    const chars = Array.from(text);
    const parts = [];
    let at = 0;
    for (const [start, end] of marks) {
      parts.push(chars.slice(at, start).join(""),
        el("mark", { textContent: chars.slice(start, end).join("") }));
      at = end;
    }
    parts.push(chars.slice(at).join(""));
    return parts;
  }

  function hitItem(hit) {
    const item = el("li", { className: "hit", tabIndex: 0, title: "Open and play from here",
      dataset: { job: hit.job_id, start: hit.start, end: hit.end } },
      el("span", { className: "where",
        textContent: `${hit.file_name} · ${clock(hit.start)} → ${clock(hit.end)}` }),
      el("span", { className: "hit-text" }, ...marked(hit.text, hit.marks)));
    const open = () => openTranscript(hit.job_id, { start: hit.start, end: hit.end });
    item.addEventListener("click", open);
    item.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); }
    });
    return item;
  }

  async function search(e, more = false) {
    if (e) e.preventDefault();
    const q = $("search-q").value.trim();
    if (!q) return;
    const params = new URLSearchParams({ q, limit: "20" });
    if (more && searchCursor) params.set("cursor", searchCursor);
    const resp = await api(`v1/search?${params}`);
    if (!resp.ok) {
      $("search-msg").textContent = await errorOf(resp);
      $("hits").replaceChildren();
      $("search-more").hidden = true;
      return;
    }
    const page = await resp.json();
    const items = page.data.map(hitItem);
    if (more) $("hits").append(...items); else $("hits").replaceChildren(...items);
    const n = $("hits").children.length;
    $("search-msg").textContent = n ? `${n}${page.has_more ? "+" : ""} matching segments`
      : "No matches in completed transcripts.";
    searchCursor = page.next_cursor;
    $("search-more").hidden = !page.has_more;
  }

  // ---- start ------------------------------------------------------------------------
  function start() {
    $("load-form").addEventListener("submit", loadModel);
    $("upload-form").addEventListener("submit", upload);
    $("search-form").addEventListener("submit", (e) => search(e));
    $("search-more").addEventListener("click", () => search(null, true));
    setupDrop();
    $("t-close").addEventListener("click", () => $("transcript").close());
    $("transcript").addEventListener("close", clearAudio);
    $("t-audio").addEventListener("timeupdate", markPlaying);
    $("t-audio").addEventListener("pause", markPlaying);
    $("key-button").addEventListener("click", () => openKeyDialog(
      apiKey() ? "Replace the API key this tab sends." : "Enter the server's API key."));
    $("key-cancel").addEventListener("click", () => $("key-dialog").close());
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      $("key-dialog").close();
      saveKey(key);
    });
    document.body.dataset.auth = apiKey() ? "given" : "none";
    runFeed();
  }

  start();
})();
