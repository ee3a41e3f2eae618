// mq console: the overview of every queue and a page per queue, over mqd's public HTTP API.
//
// Everything shown comes from GET /status, GET /queues and GET /queues/{name}/peek, polled every
// two seconds; rates are the difference of two samples of the queues' counters. A queue's limits
// are changed with PATCH /queues/{name}, only what was edited on the page. Data is only ever
// put into the page as text (message contents are whatever producers sent). The access token, if
// mqd wants one, lives in sessionStorage and travels as Authorization: never in a URL or a cookie.
"use strict";

(() => {
  const MODE = document.querySelector('meta[name="mq-console-mode"]').content; // "on" or "read-only"
  const CAN_CHANGE = MODE === "on";
  const POLL_MS = 2000;
  const HISTORY_SECONDS = 300;
  const PEEK_COUNT = 10;
  const CHART_HEIGHT = 170; // pixels, as console.css sets it
  const MIN_INTERVAL_SECONDS = 1; // rates over shorter intervals than this are mostly noise
  const TOKEN_KEY = "mq.token";
  const SERIES = [
    { key: "in", label: "in", counter: "sent" },
    { key: "out", label: "out", counter: "received" },
    { key: "acked", label: "acknowledged", counter: "acked" },
  ];
  // The limits a queue's page can change (PATCH /queues/{name}): empty is no limit (null).
  const LIMITS = [
    { field: "message_ttl", label: "Message TTL (seconds)" },
    { field: "max_messages", label: "Max messages" },
    { field: "max_bytes", label: "Max bytes" },
    { field: "max_in_flight", label: "Max in flight" },
    { field: "max_rate", label: "Max rate (per second)" },
  ];
  const OVERFLOWS = {
    reject: "reject: sends are refused",
    drop_oldest: "drop_oldest: the oldest make room",
  };

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    status: null,
    queues: [],
    previous: null, // {at, counters: Map(name -> counters), commits}
    rates: new Map(), // name -> {in, out, acked} over the last interval
    history: new Map(), // name -> [{at, in, out, acked}], and "" for every queue together
    commitFigures: null, // {perSecond, latencyMs, perCommit} over the last interval
    needsToken: false,
    view: null,
    timer: null,
    refreshing: false, // one refresh at a time: another asked for meanwhile runs after it
    refreshAgain: false,
  };

  // -- the API --------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // The reply's text (null for 204), or an ApiError with mqd's own sentence.
  async function request(method, path, bodyText) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (bodyText !== undefined) headers["Content-Type"] = "application/json";
    let response, text;
    try {
      response = await fetch(path, { method, headers, body: bodyText, cache: "no-store", credentials: "omit" });
      text = await response.text();
    } catch (error) {
      throw new ApiError(0, "unreachable", "mqd is not answering.");
    }
    if (response.ok) return response.status === 204 ? null : text;
    let reply = null;
    try {
      reply = JSON.parse(text);
    } catch (error) {
      reply = null;
    }
    const sentence = reply && reply.error ? reply.error : `mqd answered ${response.status}.`;
    throw new ApiError(response.status, reply && reply.code ? reply.code : "", sentence);
  }

  async function api(method, path, bodyText) {
    const text = await request(method, path, bodyText);
    return text === null ? null : JSON.parse(text);
  }

  // Content is shown with its numbers as sent (1.50 stays 1.50, a large integer stays exact), as
  // mqd keeps it: JSON.parse hands a reviver each number's source text in current browsers.
  class NumberText {
    constructor(text) {
      this.text = text;
    }
  }

  function keepNumberText(key, value, context) {
    return typeof value === "number" && context && context.source ? new NumberText(context.source) : value;
  }

  function pretty(value, indent = "") {
    if (value instanceof NumberText) return value.text;
    const inner = indent + "  ";
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return `[\n${value.map((item) => inner + pretty(item, inner)).join(",\n")}\n${indent}]`;
    }
    if (value !== null && typeof value === "object") {
      const members = Object.entries(value);
      if (!members.length) return "{}";
      const lines = members.map(([key, member]) => `${inner}${JSON.stringify(key)}: ${pretty(member, inner)}`);
      return `{\n${lines.join(",\n")}\n${indent}}`;
    }
    return JSON.stringify(value);
  }

  const queuePath = (name) => "/queues/" + encodeURIComponent(name);

  // -- building the page (text only: never HTML from data) -------------------------------------

  function h(tag, attributes, ...children) {
    const element = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === false || value === null || value === undefined) continue;
      if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
      else if (name === "text") element.textContent = value;
      else element.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return element;
  }

  function svg(tag, attributes) {
    const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attributes || {})) element.setAttribute(name, value);
    return element;
  }

  function facts(pairs) {
    return h("dl", { class: "facts" }, pairs.map(([term, value]) => [h("dt", { text: term }), h("dd", { text: value })]));
  }

  const main = document.getElementById("main");
  const show = (...nodes) => main.replaceChildren(...nodes.filter(Boolean));
  const connection = document.getElementById("connection");
  const forgetToken = document.getElementById("forget-token");

  function setConnection(text, failing) {
    connection.textContent = text;
    connection.classList.toggle("error", failing);
  }

  // -- numbers for people ---------------------------------------------------------------------

  const integer = new Intl.NumberFormat("en");
  const decimal = new Intl.NumberFormat("en", { maximumFractionDigits: 1 });
  const exact = new Intl.NumberFormat("en", { maximumFractionDigits: 3 });

  function rate(value) {
    return value === undefined || value === null ? "–" : decimal.format(value);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 1) return "< 1 s";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
    if (seconds < 36 * 3600) return `${decimal.format(seconds / 3600)} h`;
    return `${decimal.format(seconds / 86400)} d`;
  }

  // A setting's seconds, exactly: 300 is "5 min", 90 is "90 s", 0.2 is "0.2 s".
  function seconds(value) {
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["min", 60]]) {
      if (value >= size && value % size === 0) return `${integer.format(value / size)} ${unit}`;
    }
    return `${exact.format(value)} s`;
  }

  function limit(value, format) {
    return value === null || value === undefined ? "no limit" : format(value);
  }

  function when(epochSeconds) {
    return new Date(epochSeconds * 1000).toLocaleString();
  }

  // -- samples, rates and history ---------------------------------------------------------------

  function remember(status, queues) {
    const at = performance.now() / 1000;
    if (state.previous && at - state.previous.at < MIN_INTERVAL_SECONDS) return; // a refresh after an action
    const counters = new Map(queues.map((queue) => [queue.name, queue.counters]));
    const previous = state.previous;
    const restarted = previous && previous.uptime > status.uptime_seconds;
    state.rates = new Map();
    if (previous && !restarted && at > previous.at) {
      const seconds = at - previous.at;
      const total = { in: 0, out: 0, acked: 0 };
      for (const [name, now] of counters) {
        const before = previous.counters.get(name);
        if (!before) continue;
        const rates = {};
        for (const series of SERIES) {
          rates[series.key] = Math.max(0, now[series.counter] - before[series.counter]) / seconds;
          total[series.key] += rates[series.key];
        }
        state.rates.set(name, rates);
        record(name, at, rates);
      }
      state.rates.set("", total);
      record("", at, total);
      const commits = status.commits.count - previous.commits.count;
      state.commitFigures = {
        perSecond: commits / seconds,
        latencyMs: commits > 0 ? ((status.commits.seconds - previous.commits.seconds) / commits) * 1000 : null,
        perCommit: commits > 0 ? (status.commits.operations - previous.commits.operations) / commits : null,
      };
    }
    for (const name of state.history.keys()) {
      if (name !== "" && !counters.has(name)) state.history.delete(name);
    }
    state.previous = { at, uptime: status.uptime_seconds, counters, commits: status.commits };
  }

  function record(name, at, rates) {
    const samples = state.history.get(name) || [];
    samples.push({ at, ...rates });
    while (samples.length && samples[0].at < at - HISTORY_SECONDS) samples.shift();
    state.history.set(name, samples);
  }

  // -- the chart: three lines of rates over the last minutes, drawn in SVG ---------------------

  function chart(title) {
    const figure = h("figure", { class: "chart panel" });
    const heading = h("h2", { text: title });
    const drawing = svg("svg", { role: "img" });
    const legend = h(
      "ul",
      { class: "legend" },
      SERIES.map((series) => h("li", {}, h("span", { class: `swatch series-${series.key}` }), series.label)),
    );
    figure.append(heading, drawing, legend);
    return { element: figure, draw: (samples) => drawChart(drawing, samples || [], title) };
  }

  function drawChart(drawing, samples, title) {
    // Drawn in the element's own pixels, so the labels keep their size at any width.
    const width = Math.max(200, Math.round(drawing.getBoundingClientRect().width) || 600);
    const height = CHART_HEIGHT;
    drawing.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const left = 48, right = width - 8, top = 8, bottom = height - 24;
    const now = performance.now() / 1000;
    const highest = Math.max(1, ...samples.flatMap((sample) => SERIES.map((series) => sample[series.key])));
    const scale = niceCeiling(highest);
    const x = (at) => left + ((at - (now - HISTORY_SECONDS)) / HISTORY_SECONDS) * (right - left);
    const y = (value) => bottom - (value / scale) * (bottom - top);
    const parts = [
      svg("line", { class: "axis", x1: left, y1: bottom, x2: right, y2: bottom }),
      svg("line", { class: "axis", x1: left, y1: top, x2: right, y2: top }),
      label(left - 6, top + 4, `${decimal.format(scale)}/s`, "end"),
      label(left - 6, bottom + 4, "0", "end"),
      label(left, bottom + 18, `${HISTORY_SECONDS / 60} min ago`, "start"),
      label(right, bottom + 18, "now", "end"),
    ];
    for (const series of SERIES) {
      const points = samples.map((sample) => `${x(sample.at).toFixed(1)},${y(sample[series.key]).toFixed(1)}`);
      if (points.length) parts.push(svg("polyline", { class: `series-${series.key}`, points: points.join(" ") }));
    }
    drawing.replaceChildren(...parts);
    const last = samples[samples.length - 1];
    const summary = last
      ? SERIES.map((series) => `${series.label} ${rate(last[series.key])} per second`).join(", ")
      : "no samples yet";
    drawing.setAttribute("aria-label", `${title}: ${summary}.`);
  }

  function label(x, y, text, anchor) {
    const element = svg("text", { x, y, "text-anchor": anchor });
    element.textContent = text;
    return element;
  }

  function niceCeiling(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 5, 10]) if (value <= step * power) return step * power;
    return 10 * power;
  }

  // -- the overview -----------------------------------------------------------------------------

  function overviewView() {
    const daemon = h("section", { class: "panel", "aria-labelledby": "daemon-title" });
    const rates = chart("Messages per second, every queue");
    const body = h("tbody");
    const empty = h("p", { class: "notice", hidden: true },
      "No queues yet. Create one with ", h("code", { text: "mqctl create NAME" }), ".");
    const table = h(
      "div",
      { class: "scroll", role: "region", "aria-label": "Queues", tabindex: "0" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden", text: "Every queue: its depth by state and its rates" }),
        h("thead", {}, h("tr", {}, [
          "Queue", "Ready", "Leased", "Delayed", "Dead-lettered", "Oldest ready", "In/s", "Out/s", "Acked/s",
        ].map((text) => h("th", { scope: "col", text })))),
        body,
      ),
    );
    const rows = new Map(); // name -> {row, cells}
    show(
      h("h1", { text: "Queues" }),
      flash.take(),
      h("div", { class: "panels" }, daemon, rates.element),
      h("h2", { id: "queues-title", text: "Every queue" }),
      empty,
      table,
    );

    return {
      update() {
        daemon.replaceChildren(h("h2", { id: "daemon-title", text: "mqd" }), facts(daemonFacts()));
        rates.draw(state.history.get(""));
        empty.hidden = state.queues.length > 0;
        table.hidden = state.queues.length === 0;
        const seen = new Set();
        state.queues.forEach((queue, index) => {
          seen.add(queue.name);
          let entry = rows.get(queue.name);
          if (!entry) {
            const cells = Array.from({ length: 8 }, () => h("td"));
            const link = h("a", { href: "#/queues/" + encodeURIComponent(queue.name), text: queue.name });
            entry = { row: h("tr", {}, h("th", { scope: "row" }, link), cells), cells };
            rows.set(queue.name, entry);
          }
          const queueRates = state.rates.get(queue.name) || {};
          const values = [
            integer.format(queue.ready), integer.format(queue.leased), integer.format(queue.delayed),
            integer.format(queue.dead_lettered), duration(queue.oldest_ready_age_seconds),
            rate(queueRates.in), rate(queueRates.out), rate(queueRates.acked),
          ];
          values.forEach((value, column) => {
            if (entry.cells[column].textContent !== value) entry.cells[column].textContent = value;
          });
          if (body.children[index] !== entry.row) body.insertBefore(entry.row, body.children[index] || null);
        });
        for (const [name, entry] of rows) {
          if (!seen.has(name)) {
            entry.row.remove();
            rows.delete(name);
          }
        }
      },
    };
  }

  function daemonFacts() {
    const status = state.status;
    const figures = state.commitFigures;
    return [
      ["Version", status.version],
      ["Up for", duration(status.uptime_seconds)],
      ["Store", `${status.store.kind} · ${status.store.location}`],
      ["fsync", status.fsync === null ? "PostgreSQL's own" : status.fsync],
      ["Commits", figures ? `${decimal.format(figures.perSecond)}/s` : "–"],
      ["Commit latency", figures && figures.latencyMs !== null ? `${decimal.format(figures.latencyMs)} ms` : "–"],
      ["Operations per commit", figures && figures.perCommit !== null ? decimal.format(figures.perCommit) : "–"],
      ["Waiting receivers", integer.format(status.waiting_receivers)],
      ["Queues · messages", `${integer.format(status.queues)} · ${integer.format(status.messages)}`],
    ];
  }

  // -- a queue's page ---------------------------------------------------------------------------

  function queueView(name) {
    const heading = h("h1", {}, h("span", { class: "visually-hidden", text: "Queue " }), name);
    const gone = h("p", { class: "notice error", role: "alert", hidden: true });
    const counts = h("section", { class: "panel", "aria-labelledby": "counts-title" });
    const settings = h("section", { class: "panel", "aria-labelledby": "settings-title" });
    const rates = chart("Messages per second");
    const result = h("p", { class: "notice", role: "status", hidden: true });
    const peekList = h("div");
    const redrive = h("button", { type: "button", hidden: true, onclick: () => redriveQueue(name) }, "Redrive dead letters");
    const actions = CAN_CHANGE
      ? h("section", { "aria-labelledby": "actions-title" },
        h("h2", { id: "actions-title", text: "Actions" }),
        h("div", { class: "buttons" },
          redrive,
          h("button", { type: "button", class: "danger", onclick: () => purgeQueue(name) }, "Purge…"),
          h("button", { type: "button", class: "danger", onclick: () => deleteQueue(name) }, "Delete…")))
      : h("p", { class: "notice" },
        "This console is read-only: sending, purging, deleting, redriving and changing limits are off " +
        "(mqd --console read-only).");
    const sender = CAN_CHANGE ? sendForm(name) : null;
    const limits = CAN_CHANGE ? limitsForm(name) : null;
    const live = h("div", {}, h("div", { class: "panels" }, counts, settings, rates.element), actions, sender,
      limits && limits.element,
      h("section", { "aria-labelledby": "peek-title" },
        h("h2", { id: "peek-title", text: `Next messages (up to ${PEEK_COUNT}, left in place)` }), peekList));
    show(h("p", {}, h("a", { href: "#/", text: "← Every queue" })), heading, flash.take(), gone, result, live);
    return {
      say(text, failing) {
        result.textContent = text;
        result.classList.toggle("error", !!failing);
        result.hidden = false;
      },
      async update() {
        const queue = state.queues.find((candidate) => candidate.name === name);
        const messages = queue ? await peek(name) : undefined;
        if (!queue || messages === undefined) {
          gone.textContent = `Queue ${name} does not exist: it was deleted, or never created.`;
          gone.hidden = false;
          live.hidden = true;
          return;
        }
        gone.hidden = true;
        live.hidden = false;
        const queueRates = state.rates.get(name) || {};
        counts.replaceChildren(h("h2", { id: "counts-title", text: "Now" }), facts([
          ["Ready", integer.format(queue.ready)],
          ["Leased", integer.format(queue.leased)],
          ["Delayed", integer.format(queue.delayed)],
          ["Dead-lettered", integer.format(queue.dead_lettered)],
          ["Oldest ready", duration(queue.oldest_ready_age_seconds)],
          ["Messages", held(queue.messages, queue.max_messages)],
          ["Bytes", held(queue.bytes, queue.max_bytes)],
          ["In · out · acked", `${rate(queueRates.in)} · ${rate(queueRates.out)} · ${rate(queueRates.acked)} per second`],
          ["Since mqd started", `${integer.format(queue.counters.expired)} expired · ` +
            `${integer.format(queue.counters.dropped)} dropped · ${integer.format(queue.counters.refused)} refused`],
        ]));
        const feeding = state.queues.filter((other) => other.dead_letter_queue === name).map((other) => other.name);
        settings.replaceChildren(h("h2", { id: "settings-title", text: "Settings" }), facts([
          ["Created", when(queue.created_at)],
          ["Max attempts", queue.max_attempts === null ? "no limit" : String(queue.max_attempts)],
          ["Dead-letter queue", queue.dead_letter_queue === null ? "none" : queue.dead_letter_queue],
          ["Dead letters of", feeding.length ? feeding.join(", ") : "no queue"],
          ["Idempotency window", seconds(queue.dedup_window)],
          ["Message TTL", queue.message_ttl === null ? "none: messages never expire" : seconds(queue.message_ttl)],
          ["Max messages", limit(queue.max_messages, (count) => integer.format(count))],
          ["Max bytes", limit(queue.max_bytes, (bytes) => `${integer.format(bytes)} bytes`)],
          ["Overflow", OVERFLOWS[queue.overflow] || queue.overflow],
          ["Max in flight", limit(queue.max_in_flight, (count) => `${integer.format(count)} leased at once`)],
          ["Max rate", limit(queue.max_rate, (perSecond) => `${exact.format(perSecond)} per second`)],
        ]));
        if (limits) limits.fill(queue);
        redrive.hidden = !(feeding.length || queue.dead_lettered);
        rates.draw(state.history.get(name));
        peekList.replaceChildren(messageList(messages));
      },
    };
  }

  // What it holds, against its limit if it has one: "3 of 5".
  function held(count, most) {
    return integer.format(count) + (most === null ? "" : ` of ${integer.format(most)}`);
  }

  async function peek(name) {
    try {
      const text = await request("GET", `${queuePath(name)}/peek?count=${PEEK_COUNT}`);
      if (text === null) return [];
      const exact = JSON.parse(text, keepNumberText).messages;
      return JSON.parse(text).messages.map((message, index) => ({ ...message, content: exact[index].content }));
    } catch (error) {
      if (error.status === 404) return undefined;
      throw error;
    }
  }

  function messageList(messages) {
    if (!messages.length) return h("p", { class: "muted", text: "No message is ready." });
    const now = Date.now() / 1000;
    return h("ol", { class: "messages" }, messages.map((message) => {
      const meta = [`#${message.id}`, `attempts ${message.attempts}`];
      if (message.priority) meta.push(`priority ${message.priority}`);
      if (message.group !== undefined && message.group !== null) meta.push(`group ${message.group}`);
      meta.push(`${duration(now - message.enqueued_at)} old`);
      return h("li", {}, h("div", { class: "meta", text: meta.join(" · ") }), h("pre", { text: pretty(message.content) }));
    }));
  }

  function sendForm(name) {
    const content = h("textarea", { id: "send-content", rows: 4, spellcheck: "false", required: true });
    const asJson = h("input", { type: "radio", name: "send-as", id: "send-json", value: "json", checked: true });
    const asText = h("input", { type: "radio", name: "send-as", id: "send-text", value: "text" });
    const form = h("form", { "aria-labelledby": "send-title" },
      h("h2", { id: "send-title", text: "Send a message" }),
      h("label", { for: "send-content", text: "Content" }),
      content,
      h("fieldset", {}, h("legend", { text: "Send as" }),
        h("span", {}, asJson, " ", h("label", { for: "send-json", text: "JSON" })),
        h("span", {}, asText, " ", h("label", { for: "send-text", text: "text" }))),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Send")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let body;
      if (asJson.checked) {
        try {
          JSON.parse(content.value);
        } catch (error) {
          state.view.say("That is not JSON: send it as text, or fix it.", true);
          content.focus();
          return;
        }
        body = `{"content": ${content.value}}`; // the text as typed: numbers keep their digits
      } else {
        body = JSON.stringify({ content: content.value });
      }
      try {
        const reply = await api("POST", `${queuePath(name)}/messages`, body);
        state.view.say(`Sent: message ${reply.id}.`);
        content.value = "";
        await refresh();
      } catch (error) {
        state.view.say(`Not sent: ${error.message}`, true);
      }
    });
    return form;
  }

  // The queue's limits, folded away until asked for. Each field remembers the value it was filled
  // with: a field not edited follows the queue as it changes, and only edited ones are sent, so a
  // change made elsewhere meanwhile is not put back.
  function limitsForm(name) {
    const fields = new Map(); // field -> {input, label, shown}
    const inputs = LIMITS.map(({ field, label }) => {
      const input = h("input", {
        type: "text", id: `limit-${field}`, inputmode: "decimal", autocomplete: "off", spellcheck: "false",
        "aria-describedby": "limits-hint",
      });
      fields.set(field, { input, label, shown: "" });
      return h("div", {}, h("label", { for: input.id, text: label }), input);
    });
    const overflow = h("select", { id: "limit-overflow", "aria-describedby": "limits-hint" },
      Object.keys(OVERFLOWS).map((value) => h("option", { value, text: value })));
    fields.set("overflow", { input: overflow, label: "Overflow", shown: overflow.value });
    const form = h("form", { "aria-labelledby": "limits-title" },
      h("div", { class: "fields" }, inputs, h("div", {}, h("label", { for: overflow.id, text: "Overflow" }), overflow)),
      h("p", { id: "limits-hint", class: "muted",
        text: "Empty: no limit. Overflow is what a send to a full queue does: reject it, or drop the oldest." }),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Save limits")));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const changes = {};
      for (const [field, entry] of fields) {
        const text = entry.input.value.trim();
        if (text === entry.shown) continue;
        if (field === "overflow" || text === "") {
          changes[field] = text === "" ? null : text;
        } else if (/^[0-9]*\.?[0-9]+$/.test(text)) {
          changes[field] = Number(text);
        } else {
          state.view.say(`${entry.label}: ${text} is not a number (empty is no limit).`, true);
          entry.input.focus();
          return;
        }
      }
      const names = Object.keys(changes);
      if (!names.length) {
        state.view.say("Nothing to change: edit a limit first.");
        return;
      }
      try {
        const queue = await api("PATCH", queuePath(name), JSON.stringify(changes));
        fill(queue, true);
        const said = names.map((field) => `${field} = ${queue[field] === null ? "no limit" : String(queue[field])}`);
        state.view.say(`Changed: ${said.join(", ")}.`);
        await refresh();
      } catch (error) {
        state.view.say(`Not changed: ${error.message}`, true);
      }
    });

    function fill(queue, all) {
      for (const [field, entry] of fields) {
        const text = queue[field] === null ? "" : String(queue[field]);
        if (all || entry.input.value === entry.shown) entry.input.value = text;
        if (all || entry.input.value === text) entry.shown = text;
      }
    }

    return {
      element: h("details", { class: "limits" },
        h("summary", {}, h("h2", { id: "limits-title", text: "Change the limits" })), form),
      fill: (queue) => fill(queue, false),
    };
  }

  // -- actions behind a confirmation --------------------------------------------------------------

  const dialog = document.getElementById("confirm");

  function confirmAction(title, text, action) {
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-button").textContent = action;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
      dialog.showModal();
    });
  }

  async function purgeQueue(name) {
    const queue = state.queues.find((candidate) => candidate.name === name);
    const count = queue ? integer.format(queue.messages) : "its";
    if (!(await confirmAction(`Purge ${name}?`, `This removes its ${count} messages, leased and delayed ones too. It cannot be undone.`, "Purge"))) return;
    try {
      const reply = await api("DELETE", `${queuePath(name)}/messages`);
      state.view.say(`Purged ${integer.format(reply.purged)} messages.`);
      await refresh();
    } catch (error) {
      state.view.say(`Not purged: ${error.message}`, true);
    }
  }

  async function deleteQueue(name) {
    if (!(await confirmAction(`Delete ${name}?`, "This deletes the queue and every message in it. It cannot be undone.", "Delete"))) return;
    try {
      await api("DELETE", queuePath(name));
      flash.set(`Queue ${name} deleted.`);
      location.hash = "#/";
    } catch (error) {
      state.view.say(`Not deleted: ${error.message}`, true);
    }
  }

  async function redriveQueue(name) {
    try {
      const reply = await api("POST", `${queuePath(name)}/redrive`, "{}");
      const where = Object.entries(reply.queues).map(([queue, moved]) => `${integer.format(moved)} to ${queue}`);
      state.view.say(`Moved ${integer.format(reply.moved)} dead letters${where.length ? ": " + where.join(", ") : ""}.`);
      await refresh();
    } catch (error) {
      state.view.say(`Not redriven: ${error.message}`, true);
    }
  }

  // A sentence for the next page (a deleted queue's page is gone: the overview says it).
  const flash = {
    text: null,
    set(text) { this.text = text; },
    take() {
      const text = this.text;
      this.text = null;
      return text ? h("p", { class: "notice ok", role: "status", text }) : null;
    },
  };

  // -- the access token -----------------------------------------------------------------------------

  function tokenView(message) {
    const input = h("input", { type: "password", id: "token", autocomplete: "off", required: true });
    const form = h("form", { class: "panel" },
      h("h1", { text: "This mqd needs an access token" }),
      message ? h("p", { class: "notice error", role: "alert", text: message }) : null,
      h("p", { text: "It is kept in this tab only (sessionStorage) and sent with each request; closing the tab forgets it." }),
      h("label", { for: "token", text: "Access token" }),
      input,
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Open the console")));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = input.value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      route();
    });
    show(form);
    input.focus();
    return { update() {} };
  }

  forgetToken.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    route();
  });

  // -- polling and routing ------------------------------------------------------------------------

  async function refresh() {
    if (state.refreshing) {
      state.refreshAgain = true;
      return;
    }
    state.refreshing = true;
    clearTimeout(state.timer);
    try {
      const [status, list] = await Promise.all([api("GET", "/status"), api("GET", "/queues")]);
      state.status = status;
      state.queues = list.queues;
      remember(status, list.queues);
      if (!state.view) state.view = viewForLocation();
      await state.view.update();
      setConnection(`Live · ${new Date().toLocaleTimeString()}`, false);
    } catch (error) {
      if (error.status === 401) {
        state.needsToken = true;
        state.view = tokenView(state.token ? "The access token is wrong." : null);
        setConnection("Needs an access token", true);
      } else {
        const sentence = error.status === 0 ? "mqd is not answering; retrying every few seconds." : error.message;
        setConnection(sentence, true);
        if (!state.view) show(h("p", { class: "notice error", text: sentence }));
      }
    } finally {
      state.refreshing = false;
      forgetToken.hidden = !state.token;
      if (state.refreshAgain) {
        state.refreshAgain = false;
        refresh();
      } else if (!state.needsToken) {
        state.timer = setTimeout(refresh, POLL_MS); // no polling while the page waits for a token
      }
    }
  }

  function viewForLocation() {
    const match = location.hash.match(/^#\/queues\/(.+)$/);
    if (match) {
      let name = match[1];
      try {
        name = decodeURIComponent(name);
      } catch (error) {
        // not an address the console made: shown as it is, a queue that does not exist
      }
      document.title = `${name} · mq console`;
      return queueView(name);
    }
    document.title = "mq console";
    return overviewView();
  }

  function route() {
    state.view = null;
    state.needsToken = false;
    refresh();
  }

  window.addEventListener("hashchange", () => {
    route();
    main.focus({ preventScroll: true });
  });
  main.setAttribute("tabindex", "-1");
  route();
})();
