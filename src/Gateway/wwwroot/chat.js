// The chat page: streams replies from the gateway's SignalR hub (/hubs/chat, method Chat) and shows, per generated
// token, the experts it was routed to. Plain JS on purpose: no framework, no bundler; signalR comes from
// lib/signalr.min.js, which the build copies from npm.
"use strict";

(() => {
  const $ = id => document.getElementById(id);
  const ui = {
    messages: $("messages"), error: $("error"), composer: $("composer"), prompt: $("prompt"),
    send: $("send"), stop: $("stop"), temperature: $("temperature"), maxTokens: $("max-tokens"),
    apiKey: $("api-key"), newChat: $("new-chat"), modelName: $("model-name"), replyStats: $("reply-stats"),
  };

  const history = [];   // the conversation sent with every request: [{ role, content }]
  let model = null;     // the /v1/models entry
  let current = null;   // the reply being streamed (see send)
  let connection = null;
  let connectionKey = null;

  // ---------------------------------------------------------------- server

  const apiKey = () => ui.apiKey.value.trim();

  async function loadModel() {
    try {
      const key = apiKey();
      const response = await fetch("v1/models", { headers: key ? { Authorization: `Bearer ${key}` } : {} });
      const body = await response.json().catch(() => null);
      if (!response.ok) throw new Error(body?.error?.message ?? `GET /v1/models: HTTP ${response.status}`);
      model = body.data[0];
      ui.modelName.textContent = `${model.id} (${model.architecture}, ${model.num_layers} layers, ` +
        `${model.num_experts} experts, top-${model.num_experts_per_token})`;
      experts.reset(model.num_layers, model.num_experts);
      clearError();
    } catch (e) {
      ui.modelName.textContent = "model unavailable";
      showError(e.message);
    }
  }

  // One connection, rebuilt when the API key changes (the key travels as access_token on the WebSocket).
  async function connect() {
    const key = apiKey();
    if (connection && connectionKey !== key) {
      await connection.stop();
      connection = null;
    }
    if (!connection) {
      connection = new signalR.HubConnectionBuilder()
        .withUrl("hubs/chat", key ? { accessTokenFactory: () => key } : {})
        .withAutomaticReconnect()
        .configureLogging(signalR.LogLevel.Warning)
        .build();
      connectionKey = key;
    }
    if (connection.state === signalR.HubConnectionState.Disconnected) await connection.start();
    if (connection.state !== signalR.HubConnectionState.Connected)
      throw new Error("the connection to the server is being re-established; try again in a moment");
    return connection;
  }

  // The hub's refusals arrive as "An unexpected error occurred invoking 'Chat' on the server. HubException: <why>".
  const hubMessage = e => /HubException: ([\s\S]*)$/.exec(e?.message ?? "")?.[1] ?? e?.message ?? String(e);

  // ---------------------------------------------------------------- chat

  function bubble(role, text) {
    const div = document.createElement("div");
    div.className = `message ${role}`;
    div.textContent = text; // never innerHTML: model output is untrusted text
    ui.messages.append(div);
    ui.messages.scrollTop = ui.messages.scrollHeight;
    return div;
  }

  function intSetting(input, fallback) {
    const v = Number.parseInt(input.value, 10);
    return Number.isFinite(v) ? v : fallback;
  }

  function floatSetting(input, fallback) {
    const v = Number.parseFloat(input.value);
    return Number.isFinite(v) ? v : fallback;
  }

  async function send() {
    const text = ui.prompt.value.trim();
    if (!text || current) return;
    clearError();
    history.push({ role: "user", content: text });
    const reply = {
      prompt: text,
      userBubble: bubble("user", text),
      bubble: bubble("assistant streaming", ""),
      textNode: document.createTextNode(""),
      text: "", shown: 0, drawPending: false,
      tokens: 0, started: 0, first: 0, last: 0,
      finish: null, usage: null, error: null, subscription: null, done: false,
    };
    reply.bubble.append(reply.textNode);
    current = reply;
    ui.prompt.value = "";
    setState("streaming");
    experts.startReply();

    const request = {
      messages: history.map(m => ({ role: m.role, content: m.content })),
      maxTokens: intSetting(ui.maxTokens, 256),
      temperature: floatSetting(ui.temperature, 0.8),
    };
    try {
      const conn = await connect();
      if (reply.done) return; // stopped while connecting
      reply.started = performance.now(); // after connecting: "first token" is the server's latency
      reply.subscription = conn.stream("Chat", request).subscribe({
        next: chunk => onChunk(reply, chunk),
        complete: () => finish(reply, null),
        error: e => finish(reply, hubMessage(e)),
      });
    } catch (e) {
      finish(reply, hubMessage(e));
    }
  }

  function onChunk(reply, c) {
    if (reply.done || c.index !== 0) return; // the page asks for one choice
    const now = performance.now();
    reply.text += c.text ?? "";
    if (c.tokenId >= 0) {
      reply.tokens++;
      reply.first ||= now;
      reply.last = now;
    }
    if (c.experts) experts.token(c.experts, reply.tokens, c.text);
    if (c.finishReason) reply.finish = c.finishReason;
    if (c.usage) reply.usage = c.usage;
    if (c.error) reply.error = c.error;
    // Draw once per frame, not per token: a busy page reads the socket late, and the server's backpressure
    // would then slow the generation itself.
    if (!reply.drawPending) {
      reply.drawPending = true;
      requestAnimationFrame(() => draw(reply));
    }
  }

  function draw(reply) {
    reply.drawPending = false;
    if (reply.shown < reply.text.length) {
      const box = ui.messages;
      const follow = box.scrollHeight - box.scrollTop - box.clientHeight < 40; // only if the reader is at the end
      reply.textNode.appendData(reply.text.slice(reply.shown));
      reply.shown = reply.text.length;
      if (follow) box.scrollTop = box.scrollHeight;
    }
    showStats(reply);
  }

  // Ends a reply once, whichever comes first: the stream's completion, its error, or Stop.
  function finish(reply, error) {
    if (reply.done) return;
    reply.done = true;
    current = null;
    draw(reply);
    reply.bubble.classList.remove("streaming");
    reply.bubble.dataset.finish = reply.finish ?? (error ? "error" : "stopped");
    reply.bubble.dataset.tokens = String(reply.usage?.completionTokens ?? reply.tokens);
    const why = error ?? reply.error;
    if (why) showError(why);
    if (reply.text) {
      history.push({ role: "assistant", content: reply.text });
    } else if (why) {
      // Refused or failed before any text: drop the turn and give the prompt back, so it can be sent again.
      history.pop();
      reply.bubble.remove();
      reply.userBubble.classList.add("failed");
      if (!ui.prompt.value) ui.prompt.value = reply.prompt;
    } else {
      reply.textNode.data = "(no text)";
      history.push({ role: "assistant", content: "" });
    }
    showStats(reply);
    setState("idle");
    ui.prompt.focus();
  }

  function stop() {
    const reply = current;
    if (!reply) return;
    // Disposing the subscription sends CancelInvocation: the server cancels the generation and frees its slot.
    reply.subscription?.dispose();
    finish(reply, null);
  }

  function showStats(reply) {
    const tokens = reply.usage?.completionTokens ?? reply.tokens;
    const parts = [`${tokens} tokens`];
    // Decode rate between the first and the last token; time to first token separately (it includes the prompt).
    if (reply.tokens >= 2 && reply.last > reply.first)
      parts.push(`${((reply.tokens - 1) * 1000 / (reply.last - reply.first)).toFixed(1)} tokens/s`);
    if (reply.first) parts.push(`first token ${Math.round(reply.first - reply.started)} ms`);
    if (reply.done) parts.push(`finish: ${reply.bubble.dataset.finish}`);
    ui.replyStats.textContent = parts.join(" · ");
  }

  function setState(state) {
    document.body.dataset.state = state;
    ui.send.disabled = state === "streaming";
    ui.stop.disabled = state !== "streaming";
    ui.newChat.disabled = state === "streaming";
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
  }

  // ---------------------------------------------------------------- experts panel

  // A layers x experts grid: lit cells are the current token's experts, shading is the share of this reply's
  // tokens that went to that expert in that layer. Below it, tokens per expert summed over the layers.
  // Drawing waits for the next animation frame, so a fast stream costs one redraw per frame, not per token.
  const experts = (() => {
    const grid = $("expert-grid");
    const totals = $("expert-counts");
    const caption = $("experts-current");
    let layers = 0, width = 0;
    let cells = [], counts = [], lit = [], bars = [];
    let dense = new Set();
    let tokens = 0, pending = false;
    let onShow = null; // { index, text } of the token whose experts are lit

    function reset(numLayers, numExperts) {
      layers = numLayers;
      width = numExperts;
      counts = Array.from({ length: layers }, () => new Array(width).fill(0));
      lit = [];
      tokens = 0;
      onShow = null;
      build();
    }

    function build() {
      grid.replaceChildren();
      grid.style.setProperty("--experts", String(width));
      grid.append(label(""));
      for (let e = 0; e < width; e++) grid.append(label(String(e), "col"));
      cells = [];
      for (let l = 0; l < layers; l++) {
        grid.append(label(`L${l}`, dense.has(l) ? "row dense" : "row"));
        cells.push(Array.from({ length: width }, (_, e) => {
          const cell = document.createElement("div");
          cell.className = "cell";
          cell.title = `layer ${l}, expert ${e}`;
          grid.append(cell);
          return cell;
        }));
      }
      totals.replaceChildren();
      bars = Array.from({ length: width }, (_, e) => {
        const row = document.createElement("div");
        row.className = "count";
        const name = document.createElement("span");
        name.textContent = `E${e}`;
        const bar = document.createElement("span");
        bar.className = "bar";
        const value = document.createElement("span");
        value.className = "value";
        row.append(name, bar, value);
        totals.append(row);
        return { bar, value };
      });
      draw();
    }

    function label(text, cls) {
      const div = document.createElement("div");
      div.className = `label ${cls ?? ""}`;
      div.textContent = text;
      return div;
    }

    function startReply() {
      for (const row of counts) row.fill(0);
      lit = [];
      tokens = 0;
      onShow = null;
      schedule();
    }

    // byLayer: for each layer, the expert ids this token was routed to (empty for a dense layer).
    function token(byLayer, index, text) {
      // Grow when the model info was missing or smaller than what the stream reports.
      const needLayers = byLayer.length;
      const needWidth = Math.max(width, ...byLayer.flat().map(e => e + 1));
      if (needLayers > layers || needWidth > width) {
        const old = counts;
        layers = Math.max(layers, needLayers);
        width = needWidth;
        counts = Array.from({ length: layers }, (_, l) => Array.from({ length: width }, (_, e) => old[l]?.[e] ?? 0));
        build();
      }
      byLayer.forEach((ids, l) => {
        if (ids.length === 0 && !dense.has(l)) {
          dense.add(l);
          build();
        }
        for (const e of ids) counts[l][e]++;
      });
      lit = byLayer;
      tokens++;
      onShow = { index, text };
      schedule();
    }

    function schedule() {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        draw();
      });
    }

    function draw() {
      caption.textContent = onShow === null ? "" : `token ${onShow.index}` +
        `${onShow.text ? ` ${JSON.stringify(onShow.text)}` : ""}: ` +
        lit.map((ids, l) => `L${l} ${ids.length ? ids.join(",") : "dense"}`).join(" · ");
      for (let l = 0; l < cells.length; l++) {
        const on = new Set(lit[l] ?? []);
        const most = Math.max(1, ...(counts[l] ?? [])); // shade relative to the layer's most used expert
        for (let e = 0; e < width; e++) {
          const cell = cells[l][e];
          const n = counts[l]?.[e] ?? 0;
          cell.classList.toggle("on", on.has(e));
          cell.style.setProperty("--heat", (n / most).toFixed(3));
          cell.title = `layer ${l}, expert ${e}: ${n} of ${tokens} tokens`;
        }
      }
      const sums = Array.from({ length: width }, (_, e) => counts.reduce((s, row) => s + (row[e] ?? 0), 0));
      const max = Math.max(1, ...sums);
      sums.forEach((n, e) => {
        bars[e].bar.style.setProperty("--share", (n / max).toFixed(3));
        bars[e].value.textContent = String(n);
      });
    }

    return { reset, startReply, token };
  })();

  // ---------------------------------------------------------------- wiring

  ui.composer.addEventListener("submit", e => {
    e.preventDefault();
    send();
  });
  ui.prompt.addEventListener("keydown", e => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  ui.stop.addEventListener("click", stop);
  ui.newChat.addEventListener("click", () => {
    history.length = 0;
    ui.messages.replaceChildren();
    ui.replyStats.textContent = "";
    clearError();
    experts.startReply();
  });
  ui.apiKey.addEventListener("change", loadModel);

  setState("idle");
  loadModel();
})();
