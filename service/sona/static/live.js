// The dashboard's live view: the microphone → GET v1/realtime (the OpenAI
// Realtime transcription protocol, docs/api.md "Live sessions") → text on the
// page. Audio goes as 16-bit PCM at 24 kHz, resampled here from the audio
// context's rate, in base64 frames of 100 ms. A browser's WebSocket cannot send
// an Authorization header: the API key goes as the subprotocol
// "openai-insecure-api-key.KEY", as OpenAI's browser clients send it. Text from
// the server only ever goes through textContent.
"use strict";

(() => {
  const RATE = 24000;
  const FRAME = RATE / 10; // samples in 100 ms
  const KEY_STORE = "sona.apiKey"; // where dashboard.js keeps the key
  const FINISH_MS = 120000; // how long Stop waits for the last turns' text
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  let live = null; // the session on screen: socket, audio graph, turns in flight

  function setState(state, text) {
    document.body.dataset.live = state;
    $("live-state").textContent = text;
    const busy = state === "starting" || state === "listening" || state === "finishing";
    $("live-start").disabled = busy;
    $("live-stop").disabled = state !== "listening";
  }

  function showError(message) {
    $("live-error").textContent = message;
    $("live-error").hidden = !message;
  }

  // ---- audio: the context's rate → 24 kHz PCM16, 100 ms frames ----------------
  /** Each output sample is the mean of the input samples since the one before
   * (a box filter: enough of a low-pass for speech at 44.1 or 48 kHz); a rate
   * below 24 kHz repeats samples. State carries across blocks. */
  function resampler(fromRate, emit) {
    const step = fromRate / RATE; // input samples per output sample
    let seen = 0;
    let next = step;
    let sum = 0;
    let count = 0;
    let last = 0;
    return (block) => {
      for (let i = 0; i < block.length; i++) {
        sum += block[i];
        count += 1;
        seen += 1;
        last = block[i];
        while (seen >= next) {
          emit(count ? sum / count : last);
          sum = 0;
          count = 0;
          next += step;
        }
      }
    };
  }

  /** Samples → 100 ms frames of little-endian PCM16, each handed to ``send``. */
  function framer(send) {
    let frame = new DataView(new ArrayBuffer(FRAME * 2));
    let filled = 0;
    const push = (x) => {
      const v = Math.max(-1, Math.min(1, x));
      frame.setInt16(filled * 2, Math.round(v * 32767), true);
      filled += 1;
      if (filled === FRAME) {
        send(new Uint8Array(frame.buffer));
        frame = new DataView(new ArrayBuffer(FRAME * 2));
        filled = 0;
      }
    };
    push.flush = () => {
      if (filled) send(new Uint8Array(frame.buffer, 0, filled * 2));
      filled = 0;
    };
    return push;
  }

  function base64(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  /** The microphone into ``onBlock`` (Float32Array blocks at ctx.sampleRate):
   * an AudioWorklet, or a ScriptProcessor where worklets are missing. */
  async function capture(stream, onBlock) {
    const ctx = new AudioContext();
    const source = ctx.createMediaStreamSource(stream);
    const sink = ctx.createGain();
    sink.gain.value = 0; // the graph must reach the destination to run; silently
    sink.connect(ctx.destination);
    let node;
    try {
      await ctx.audioWorklet.addModule("dashboard/live-worklet.js");
      node = new AudioWorkletNode(ctx, "sona-capture");
      node.port.onmessage = (e) => onBlock(e.data);
      document.body.dataset.liveCapture = "worklet";
    } catch (err) {
      console.debug("no AudioWorklet, using a ScriptProcessor", err);
      node = ctx.createScriptProcessor(4096, 1, 1);
      node.onaudioprocess = (e) => onBlock(e.inputBuffer.getChannelData(0).slice());
      document.body.dataset.liveCapture = "script-processor";
    }
    source.connect(node);
    node.connect(sink);
    await ctx.resume();
    return ctx;
  }

  // ---- the transcript lines ------------------------------------------------------
  function line(item) {
    let li = $("live-lines").querySelector(`li[data-item="${CSS.escape(item)}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.item = item;
      li.dataset.state = "speaking"; // → pending (committed) → final or failed
      $("live-lines").append(li);
    }
    return li;
  }

  function onServerEvent(event) {
    switch (event.type) {
      case "session.created":
        live.sessionId = event.session.id;
        live.jobId = event.session.job_id;
        send({ type: "session.update", session: sessionConfig() });
        break;
      case "session.updated":
        live.ready = true;
        live.backlog.splice(0).forEach((bytes) => sendAudio(bytes));
        setState("listening", "● listening");
        break;
      case "input_audio_buffer.speech_started":
        live.open = event.item_id;
        line(event.item_id);
        break;
      case "input_audio_buffer.committed":
        live.open = null;
        live.pending.add(event.item_id);
        line(event.item_id).dataset.state = "pending"; // its text is being decoded
        break;
      case "conversation.item.input_audio_transcription.delta":
        line(event.item_id).append(event.delta); // deltas only ever add (a text node)
        break;
      case "conversation.item.input_audio_transcription.completed":
        finishLine(event.item_id, "final", event.transcript.trim());
        break;
      case "conversation.item.input_audio_transcription.failed":
        finishLine(event.item_id, "failed", `(not transcribed: ${event.error.message})`);
        break;
      case "error":
        showError(`${event.error.code}: ${event.error.message}`);
        break;
      default:
        break;
    }
  }

  function finishLine(item, state, text) {
    live.pending.delete(item);
    const li = line(item);
    li.dataset.state = state;
    li.textContent = text;
    if (state === "final" && !text) li.remove(); // a turn with no words in it
  }

  function sessionConfig() {
    const language = $("live-language").value.trim().toLowerCase();
    return {
      type: "transcription",
      audio: { input: {
        format: { type: "audio/pcm", rate: RATE },
        transcription: language ? { language } : {},
        turn_detection: { type: "server_vad" },
      } },
    };
  }

  // ---- the socket ------------------------------------------------------------------
  function send(event) {
    if (live && live.ws.readyState === WebSocket.OPEN) live.ws.send(JSON.stringify(event));
  }

  function sendAudio(bytes) {
    if (!live.ready) { live.backlog.push(bytes); return; } // before session.updated
    send({ type: "input_audio_buffer.append", audio: base64(bytes) });
  }

  function socketUrl() {
    const url = new URL("v1/realtime", location.href); // relative: works under a prefix
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("intent", "transcription");
    return url.href;
  }

  function openSocket() {
    const key = sessionStorage.getItem(KEY_STORE);
    const ws = new WebSocket(socketUrl(), key ? ["realtime", `openai-insecure-api-key.${key}`]
      : ["realtime"]);
    ws.onmessage = (msg) => onServerEvent(JSON.parse(msg.data));
    ws.onclose = (e) => onClosed(ws, e);
    return ws;
  }

  function onClosed(ws, e) {
    if (!live || live.ws !== ws) return;
    const session = live;
    stopCapture(session);
    live = null;
    if (session.stopping) {
      setState("stopped", "stopped");
      if (session.jobId) {
        $("live-job").textContent = `Recorded as job ${session.jobId}.`;
        $("live-job").dataset.job = session.jobId;
      }
      return;
    }
    setState("failed", "ended");
    if (!$("live-error").hidden) return; // the server's error event said why
    if (!session.sessionId) {
      showError("The live session could not be opened: is the API key right, and may this "
        + "server run a live session (see its log)?");
    } else {
      showError(`The connection ended (${e.code}${e.reason ? `: ${e.reason}` : ""}).`);
    }
  }

  function stopCapture(session) {
    if (session.stream) session.stream.getTracks().forEach((t) => t.stop());
    if (session.ctx) session.ctx.close().catch(() => {});
    session.stream = null;
    session.ctx = null;
  }

  // ---- Start and Stop ----------------------------------------------------------------
  async function start() {
    showError("");
    $("live-lines").replaceChildren();
    $("live-job").textContent = "";
    delete $("live-job").dataset.job;
    setState("starting", "starting…");
    const session = { ws: null, ctx: null, stream: null, ready: false, backlog: [],
      pending: new Set(), open: null, sessionId: null, jobId: null, stopping: false };
    live = session;
    try {
      session.stream = await navigator.mediaDevices.getUserMedia({ audio: {
        channelCount: 1, echoCancellation: false, noiseSuppression: false } });
      const frames = framer(sendAudio);
      session.flush = frames.flush;
      session.ctx = await capture(session.stream, (block) => {
        if (live === session && session.resample && !session.stopping) session.resample(block);
      });
      session.resample = resampler(session.ctx.sampleRate, frames);
      session.ws = openSocket();
    } catch (err) {
      stopCapture(session);
      live = null;
      setState("failed", "off");
      showError(`Could not start: ${err.message}`);
    }
  }

  /** The microphone stops; a turn still being spoken is committed; once every
   * turn's text is in, the socket closes normally and the job completes. */
  async function stop() {
    const session = live;
    if (!session) return;
    setState("finishing", "finishing…");
    session.stopping = true;
    stopCapture(session);
    if (session.flush) session.flush();
    if (session.open) send({ type: "input_audio_buffer.commit" });
    const deadline = Date.now() + FINISH_MS;
    while ((session.open || session.pending.size) && Date.now() < deadline && live === session) {
      await sleep(100);
    }
    if (live === session) session.ws.close(1000, "stopped");
  }

  $("live-start").addEventListener("click", start);
  $("live-stop").addEventListener("click", stop);
  window.addEventListener("pagehide", () => { if (live && live.ws) live.ws.close(1000); });
  setState("off", "off");
})();
