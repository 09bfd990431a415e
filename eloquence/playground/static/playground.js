// Eloquence playground: talk to the coach from the browser.
//
// Local mode: one RTCPeerConnection to the session host (`eloquence playground`), signalled by one
// POST /playground/api/offer; the client messages arrive on the data channel "eloquence".
// LiveKit mode: a room token from /api/livekit/token, then livekit-client (vendored, loaded on
// demand) joins the room; the same messages arrive as data packets on topic "eloquence".
//
// The page measures the end-to-end latency itself: from the last voiced sample of the microphone
// (-40 dBFS) to the first voiced sample of the coach's reply reaching the page's audio graph.
// `window.eloquencePlayground` exposes the state for tests and for curious developers.
"use strict";

(() => {
  const TOPIC = "eloquence";
  // Echo cancellation keeps the coach's voice out of the microphone (barge-in works with speakers).
  // Noise suppression and automatic gain stay off: Whisper normalises levels and copes with noise
  // better than with their artefacts. Measured with samples/question.wav and tiny.en: suppression
  // turned "calm my nerves" into "come on Earth" every time, gain control one time in five.
  const CAPTURE = { echoCancellation: true, noiseSuppression: false, autoGainControl: false };
  const params = new URLSearchParams(location.search);
  const TOKEN_KEY = "eloquence-playground-token";
  const token = params.get("token") || sessionStorage.getItem(TOKEN_KEY);
  if (params.has("token")) {
    // keep the key out of the address bar (and screenshots); this tab keeps it for reloads
    sessionStorage.setItem(TOKEN_KEY, token);
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : ""));
  }
  const forcedMode = params.get("mode");

  const $ = (id) => document.getElementById(id);
  const ui = {
    mode: $("mode"),
    exercise: $("exercise"),
    language: $("language"),
    start: $("start"),
    micLevel: $("mic-level"),
    state: $("state"),
    alert: $("alert"),
    alertText: $("alert-text"),
    reconnect: $("reconnect"),
    services: $("services"),
    turns: $("turns"),
    audio: $("agent-audio"),
  };

  const state = {
    config: null,
    mode: null,
    phase: "idle", // idle | starting | live | stopping | failed
    sessionId: null,
    roomName: null,
    turns: [],
    replyOnsets: [], // performance.now() of each reply's first voiced sample
    micLastVoiced: null, // performance.now() of the last voiced microphone sample
    e2e: [], // browser-measured end of speech → first reply audio, ms
    errors: [],
    rtcStats: null, // () => Promise<{jitterBufferMs, packetsLost, jitterMs}> in local mode
  };
  window.eloquencePlayground = state;

  let conn = null; // {close(): Promise<void>}
  let audioCtx = null;
  let micStream = null;
  let stopping = false;

  // --- HTTP -------------------------------------------------------------------------------------
  async function api(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    if (token) headers["Authorization"] = "Bearer " + token;
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
    } catch (e) {
      throw new PlaygroundError("The Eloquence API is not answering. Is `eloquence up` running?");
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const message = data && data.error && data.error.message;
      throw new PlaygroundError(message || `The API answered HTTP ${resp.status}.`, data && data.error);
    }
    return data;
  }

  class PlaygroundError extends Error {
    constructor(message, detail) {
      super(message);
      this.detail = detail || null;
    }
  }

  // --- page state -------------------------------------------------------------------------------
  function setState(text) {
    ui.state.textContent = text;
  }

  function showAlert(text, { reconnect = false } = {}) {
    ui.alertText.textContent = text;
    ui.alert.hidden = false;
    ui.reconnect.hidden = !reconnect;
    state.errors.push(text);
  }

  function clearAlert() {
    ui.alert.hidden = true;
    ui.reconnect.hidden = true;
  }

  function setPhase(phase) {
    state.phase = phase;
    const busy = phase === "starting" || phase === "stopping";
    ui.start.disabled = busy || !state.config;
    ui.start.textContent = phase === "live" || phase === "starting" ? "Stop" : "Start talking";
    ui.start.classList.toggle("stop", phase === "live");
    ui.exercise.disabled = phase !== "idle" && phase !== "failed";
    ui.language.disabled = ui.exercise.disabled;
  }

  // --- conversation -----------------------------------------------------------------------------
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function newTurn() {
    const node = el("li", "turn");
    const turn = { node, user: null, finals: [], interim: "", reply: null, metrics: null, e2eMs: null, lastUserAt: 0 };
    state.turns.push(turn);
    ui.turns.appendChild(node);
    return turn;
  }

  function currentTurn({ forUser }) {
    const last = state.turns[state.turns.length - 1];
    // a user's words after a reply (its text, or its audio when they speak over it) start a new turn
    const lastOnset = state.replyOnsets[state.replyOnsets.length - 1];
    const spokenOver = last && last.user !== null && lastOnset !== undefined && lastOnset > last.lastUserAt;
    if (!last || (forUser && (last.reply !== null || spokenOver))) return newTurn();
    return last;
  }

  function renderUser(turn) {
    if (!turn.userNode) {
      turn.userNode = el("p", "bubble user");
      turn.finalNode = el("span", "final");
      turn.interimNode = el("span", "interim");
      turn.userNode.append(turn.finalNode, turn.interimNode);
      turn.node.prepend(turn.userNode);
    }
    turn.finalNode.textContent = turn.finals.join(" ");
    turn.interimNode.textContent = (turn.finals.length ? " " : "") + turn.interim;
    turn.user = turn.finals.join(" ");
  }

  function onMessage(message) {
    if (!message || typeof message !== "object") return;
    if (message.type === "transcription") {
      const turn = currentTurn({ forUser: true });
      turn.lastUserAt = performance.now();
      if (message.final) {
        turn.finals.push(message.text);
        turn.interim = "";
      } else {
        turn.interim = message.text;
      }
      renderUser(turn);
    } else if (message.type === "transcription_revised") {
      // a pause had split the turn: the whole turn, heard again as one piece, replaces its finals
      const turn = currentTurn({ forUser: true });
      turn.finals = [message.text];
      turn.interim = "";
      renderUser(turn);
    } else if (message.type === "ai_response") {
      // the oldest turn still waiting: an interrupted reply arrives after the words that cut it
      const turn = state.turns.find((t) => t.reply === null) || newTurn();
      turn.reply = message.response;
      turn.replyNode = el("p", "bubble reply", message.response);
      turn.node.appendChild(turn.replyNode);
    } else if (message.type === "metrics") {
      const turn = [...state.turns].reverse().find((t) => t.reply !== null && t.metrics === null);
      if (!turn) return;
      turn.metrics = message.data || {};
      if (turn.metrics.interrupted) turn.node.appendChild(el("span", "interrupted", "(interrupted)"));
      renderBars(turn);
    } else if (message.type === "session_error") {
      showAlert("The coach stopped: " + message.message, { reconnect: true });
    }
  }

  function renderBars(turn) {
    if (turn.barsNode) turn.barsNode.remove();
    const rows = [];
    for (const stage of (state.config && state.config.stages) || []) {
      const value = turn.metrics && turn.metrics[stage.field];
      if (typeof value === "number") rows.push({ label: stage.label, value, cls: "" });
    }
    if (turn.e2eMs !== null) {
      rows.push({ label: "browser: end of speech → first audio heard", value: turn.e2eMs, cls: "browser" });
    }
    if (!rows.length) return;
    const scale = Math.max(1000, ...rows.map((r) => r.value));
    const bars = el("div", "bars");
    bars.setAttribute("aria-label", "stage timings (ms)");
    for (const row of rows) {
      const track = el("div", "bar-track");
      const bar = el("div", "bar " + row.cls);
      bar.style.width = `${(100 * row.value) / scale}%`;
      track.appendChild(bar);
      bars.append(el("span", "", row.label), track, el("span", "bar-value", `${Math.round(row.value)} ms`));
    }
    turn.barsNode = bars;
    turn.node.appendChild(bars);
  }

  // --- audio measurement ------------------------------------------------------------------------
  async function ensureAudioContext() {
    if (!audioCtx) {
      audioCtx = new AudioContext();
      await audioCtx.audioWorklet.addModule("/playground/static/level-worklet.js");
    }
    if (audioCtx.state !== "running") await audioCtx.resume();
    return audioCtx;
  }

  function perfTime(msg, contextTime) {
    // the worklet's clock → performance.now(): the message left `msg.now` seconds into the graph
    return performance.now() - (msg.now - contextTime) * 1000;
  }

  function watchStream(stream, onMsg) {
    const source = audioCtx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(audioCtx, "eloquence-level", { processorOptions: { gapS: 0.4 } });
    const sink = audioCtx.createGain();
    sink.gain.value = 0; // pulls the graph without playing anything twice
    source.connect(node).connect(sink).connect(audioCtx.destination);
    node.port.onmessage = (ev) => onMsg(ev.data);
    return () => {
      source.disconnect();
      node.disconnect();
    };
  }

  function watchMic(stream) {
    return watchStream(stream, (msg) => {
      if (msg.type === "level") {
        const db = 20 * Math.log10(Math.max(msg.rms, 1e-5));
        ui.micLevel.style.width = `${Math.min(100, Math.max(0, (db + 60) * (100 / 60)))}%`;
        if (msg.lastVoiced !== null) state.micLastVoiced = perfTime(msg, msg.lastVoiced);
      }
    });
  }

  function watchReply(stream) {
    // Chrome plays a remote WebRTC stream into Web Audio only while a media element holds it
    ui.audio.srcObject = stream;
    ui.audio.play().catch(() => {});
    return watchStream(stream, (msg) => {
      if (msg.type !== "onset") return;
      const at = perfTime(msg, msg.at);
      const previous = state.replyOnsets[state.replyOnsets.length - 1];
      state.replyOnsets.push(at);
      const spoke = state.micLastVoiced;
      // a turn's latency: the user spoke since the previous reply began, and stopped before this one
      if (spoke !== null && spoke < at && (previous === undefined || spoke > previous)) {
        const ms = Math.round(at - spoke);
        state.e2e.push(ms);
        const turn = [...state.turns].reverse().find((t) => t.user !== null) || currentTurn({ forUser: true });
        turn.e2eMs = ms;
        renderBars(turn);
        setState(`Connected. Last reply heard ${ms} ms after you stopped speaking.`);
      }
    });
  }

  // --- microphone -------------------------------------------------------------------------------
  async function openMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new PlaygroundError(
        "This page cannot use a microphone here: open it over http://127.0.0.1 or https, in a current browser."
      );
    }
    try {
      return await navigator.mediaDevices.getUserMedia({
        audio: CAPTURE,
        video: false,
      });
    } catch (e) {
      if (e && (e.name === "NotAllowedError" || e.name === "SecurityError")) {
        throw new PlaygroundError(
          "The microphone was refused. Allow it for this page (the icon in the address bar), then press Start again."
        );
      }
      if (e && (e.name === "NotFoundError" || e.name === "OverconstrainedError")) {
        throw new PlaygroundError("No microphone was found. Connect one and press Start again.");
      }
      if (e && e.name === "NotReadableError") {
        throw new PlaygroundError("The microphone is busy in another application.");
      }
      throw new PlaygroundError("Could not open the microphone: " + (e && e.message ? e.message : e));
    }
  }

  // --- local mode: one peer connection to the session host --------------------------------------
  function waitForIce(pc, timeoutMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  async function connectLocal(selection) {
    const pc = new RTCPeerConnection({ iceServers: [] }); // no STUN: nothing leaves this network
    const cleanups = [];
    let lostTimer = null;
    const closeConn = async () => {
      clearTimeout(lostTimer);
      cleanups.forEach((f) => f());
      pc.close();
    };
    try {
      for (const track of micStream.getAudioTracks()) pc.addTrack(track, micStream);
      const channel = pc.createDataChannel(TOPIC, { ordered: true });
      channel.onmessage = (ev) => {
        try {
          onMessage(JSON.parse(typeof ev.data === "string" ? ev.data : new TextDecoder().decode(ev.data)));
        } catch (e) {
          console.warn("unreadable client message", e);
        }
      };
      pc.ontrack = (ev) => {
        if (ev.track.kind === "audio") cleanups.push(watchReply(ev.streams[0] || new MediaStream([ev.track])));
      };
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        if (s === "connected") {
          clearTimeout(lostTimer);
          if (state.phase === "starting") {
            setPhase("live");
            setState("Connected. Speak to the coach.");
          }
        } else if (s === "failed" || (s === "disconnected" && !stopping)) {
          clearTimeout(lostTimer);
          lostTimer = setTimeout(() => connectionLost("The connection to the coach was lost."), s === "failed" ? 0 : 3000);
        }
      };
      channel.onclose = () => {
        if (!stopping && state.phase === "live") connectionLost("The coach ended the session.");
      };

      await pc.setLocalDescription(await pc.createOffer());
      await waitForIce(pc, 3000);
      const answer = await api("POST", "/playground/api/offer", {
        sdp: pc.localDescription.sdp,
        type: pc.localDescription.type,
        exercise_type: selection.exercise,
        language: selection.language,
      });
      state.sessionId = answer.session_id;
      await pc.setRemoteDescription({ type: answer.type, sdp: answer.sdp });
      state.rtcStats = () => receiveStats(pc);
    } catch (e) {
      await closeConn();
      throw e;
    }
    return {
      close: async () => {
        const id = state.sessionId;
        state.sessionId = null;
        if (id) await api("DELETE", `/playground/api/sessions/${id}`).catch(() => {});
        await closeConn();
      },
    };
  }

  async function receiveStats(pc) {
    // what the browser adds on the way in: its jitter buffer's average delay for the coach's audio
    const stats = await pc.getStats();
    for (const report of stats.values()) {
      if (report.type === "inbound-rtp" && report.kind === "audio" && report.jitterBufferEmittedCount) {
        return {
          jitterBufferMs: Math.round((1000 * report.jitterBufferDelay) / report.jitterBufferEmittedCount),
          packetsLost: report.packetsLost,
          jitterMs: Math.round(1000 * (report.jitter || 0)),
        };
      }
    }
    return null;
  }

  // --- LiveKit mode: a room, with the vendored livekit-client -----------------------------------
  function loadLivekitClient() {
    if (window.LivekitClient) return Promise.resolve(window.LivekitClient);
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "/playground/static/vendor/livekit-client.umd.js";
      script.onload = () => resolve(window.LivekitClient);
      script.onerror = () => reject(new PlaygroundError("Could not load livekit-client from this server."));
      document.head.appendChild(script);
    });
  }

  async function connectLivekit(selection) {
    const LK = await loadLivekitClient();
    const userId = "playground-" + Math.random().toString(36).slice(2, 10);
    const grant = await api("POST", "/api/livekit/token", {
      exercise_type: selection.exercise,
      user_id: userId,
      config: { language: selection.language },
    });
    state.roomName = grant.room_name;
    const room = new LK.Room({
      audioCaptureDefaults: CAPTURE,
    });
    const cleanups = [];
    const decoder = new TextDecoder();
    room.on(LK.RoomEvent.DataReceived, (payload, participant, kind, topic) => {
      if (topic !== TOPIC) return;
      try {
        onMessage(JSON.parse(decoder.decode(payload)));
      } catch (e) {
        console.warn("unreadable client message", e);
      }
    });
    room.on(LK.RoomEvent.TrackSubscribed, (track) => {
      if (track.kind === "audio") cleanups.push(watchReply(new MediaStream([track.mediaStreamTrack])));
    });
    room.on(LK.RoomEvent.Disconnected, () => {
      if (!stopping) connectionLost("The LiveKit room closed the connection.");
    });
    try {
      await room.connect(grant.livekit_url, grant.token);
    } catch (e) {
      throw new PlaygroundError(
        `Could not join the LiveKit room at ${grant.livekit_url}: ${e && e.message ? e.message : e}. ` +
          "Is the LiveKit server running, and is the agent worker registered?"
      );
    }
    const micTrack = micStream.getAudioTracks()[0];
    await room.localParticipant.publishTrack(micTrack, { source: LK.Track.Source.Microphone });
    setPhase("live");
    setState(`Connected to room ${grant.room_name}. Speak to the coach.`);
    return {
      close: async () => {
        cleanups.forEach((f) => f());
        await room.disconnect();
      },
    };
  }

  // --- start / stop / reconnect -----------------------------------------------------------------
  async function start() {
    clearAlert();
    stopping = false;
    setPhase("starting");
    const selection = { exercise: ui.exercise.value, language: ui.language.value };
    try {
      setState("Opening the microphone…");
      micStream = await openMic();
      await ensureAudioContext();
      const stopMicWatch = watchMic(micStream);
      setState(state.mode === "livekit" ? "Joining the LiveKit room…" : "Connecting to the coach…");
      const inner = state.mode === "livekit" ? await connectLivekit(selection) : await connectLocal(selection);
      conn = {
        close: async () => {
          stopMicWatch();
          await inner.close();
        },
      };
    } catch (e) {
      await teardown();
      setPhase("failed");
      setState("Not connected.");
      showAlert(e instanceof PlaygroundError ? e.message : "Could not start: " + (e && e.message ? e.message : e), {
        reconnect: !(e && /microphone/i.test(e.message || "")),
      });
      refreshStatus();
    }
  }

  async function teardown() {
    const c = conn;
    conn = null;
    if (c) await c.close().catch(() => {});
    if (micStream) micStream.getTracks().forEach((t) => t.stop());
    micStream = null;
    ui.micLevel.style.width = "0%";
  }

  async function stop() {
    stopping = true;
    setPhase("stopping");
    await teardown();
    setPhase("idle");
    setState("Stopped. Press Start to talk again.");
  }

  async function connectionLost(text) {
    if (state.phase !== "live" && state.phase !== "starting") return;
    stopping = true;
    await teardown();
    setPhase("failed");
    setState("Not connected.");
    showAlert(text, { reconnect: true });
    refreshStatus();
  }

  ui.start.addEventListener("click", () => {
    if (state.phase === "live" || state.phase === "starting") stop();
    else start();
  });
  ui.reconnect.addEventListener("click", async () => {
    await teardown();
    await loadConfig();
    if (state.config) start();
  });

  // --- configuration and service health ---------------------------------------------------------
  function fillSelect(select, options, value) {
    select.replaceChildren(...options.map(([v, label]) => Object.assign(el("option", "", label), { value: v })));
    if (options.some(([v]) => v === value)) select.value = value;
  }

  function languagesFor(name) {
    const ex = state.config.exercises.find((e) => e.name === name);
    return ex ? ex.languages : state.config.languages;
  }

  const LANGUAGE_NAMES = { en: "English", fr: "Français" };

  function fillLanguages() {
    const keep = ui.language.value || state.config.default_language;
    fillSelect(ui.language, languagesFor(ui.exercise.value).map((l) => [l, LANGUAGE_NAMES[l] || l]), keep);
  }

  async function refreshStatus() {
    let status;
    try {
      status = await api("GET", "/playground/api/status");
    } catch (e) {
      return;
    }
    ui.services.replaceChildren();
    const down = [];
    for (const [name, s] of Object.entries(status.services)) {
      if (name === "session-host" && state.mode !== "local") continue;
      const item = el("li", s.healthy ? "" : "down", `${name}: ${s.healthy ? "up" : "down"}`);
      item.title = s.url;
      ui.services.appendChild(item);
      if (!s.healthy) down.push(name);
    }
    if (down.length && state.phase !== "live" && ui.alert.hidden) {
      const what = down.includes("session-host")
        ? "The coach's session host is not running: start the stack with `eloquence up`."
        : `Service down: ${down.join(", ")}. The coach cannot hear or answer until it is back (eloquence status).`;
      showAlert(what, { reconnect: false });
    }
  }

  async function loadConfig() {
    try {
      state.config = await api("GET", "/playground/api/config");
    } catch (e) {
      state.config = null;
      setState("Not ready.");
      showAlert(e.message, { reconnect: false });
      return;
    }
    clearAlert();
    state.mode = forcedMode === "livekit" || forcedMode === "local" ? forcedMode : state.config.mode;
    ui.mode.textContent = state.mode === "livekit" ? "LiveKit room" : "local · peer-to-peer WebRTC";
    const exercises = state.config.exercises.map((e) => [e.name, e.title || e.name]);
    fillSelect(ui.exercise, exercises, ui.exercise.value || state.config.default_exercise);
    fillLanguages();
    setPhase(state.phase === "failed" ? "failed" : "idle");
    setState("Ready. Press Start and speak; the coach greets you first.");
    await refreshStatus();
  }

  ui.exercise.addEventListener("change", fillLanguages);
  window.addEventListener("pagehide", () => {
    if (state.sessionId) {
      // the session host also notices the dropped connection; this only makes it quicker
      fetch(`/playground/api/sessions/${state.sessionId}`, {
        method: "DELETE",
        keepalive: true,
        headers: token ? { Authorization: "Bearer " + token } : {},
      }).catch(() => {});
    }
  });
  setPhase("idle");
  loadConfig();
})();
