// The storefront page: plain JavaScript over the public HTTP API, nothing else. Everything it shows
// comes from an API response; it only decides which items are new in the list since the last one.
//
// The page's URL may carry `?user=ID` (shown at once) and `?users=a,b,c` (the example buttons).
// `body[data-state]` is idle, loading, ready or error and `body[data-generation]` counts the lists
// shown, so a script driving the page can wait for the next one.
"use strict";

(() => {
  const K = 10;
  const MAX_IDS = 100; // GET /v1/items takes at most this many ids a request
  const TOKEN_KEY = "rtrec-demo-token";
  const DEFAULT_EXAMPLES = ["u1", "u2", "u3"];
  const $ = (selector) => document.querySelector(selector);
  const page = { user: null, shown: null, requestId: null, generation: 0, busy: false };

  function element(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function reason(status, body) {
    const detail = body && body.detail;
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".")}: ${d.msg}`).join("; ");
    }
    return detail ? String(detail) : `HTTP ${status}`;
  }

  async function api(path, options = {}) {
    const reply = await fetch(path, options);
    let body = null;
    try {
      body = await reply.json();
    } catch {
      body = null;
    }
    if (!reply.ok) throw new Error(`${reply.status}: ${reason(reply.status, body)}`);
    return body;
  }

  function setState(state, message = "", isError = false) {
    document.body.dataset.state = state;
    const status = $("#status");
    status.textContent = message;
    status.classList.toggle("error", isError);
  }

  // item_id -> {item_id, title, category, price} for the ids given, in requests of at most MAX_IDS ids
  async function lookup(ids) {
    const unique = [...new Set(ids)];
    const found = new Map();
    for (let at = 0; at < unique.length; at += MAX_IDS) {
      const chunk = unique.slice(at, at + MAX_IDS).map(encodeURIComponent).join(",");
      const body = await api(`v1/items?ids=${chunk}`);
      for (const item of body.items) found.set(item.item_id, item);
    }
    return found;
  }

  function describe(item, catalog) {
    const known = catalog.get(item);
    return {
      title: (known && known.title) || item,
      category: (known && known.category) || "—",
      price: known && known.price != null ? known.price.toFixed(2) : null,
    };
  }

  function renderList(recs, catalog, entered) {
    const list = $("#items");
    list.replaceChildren();
    recs.items.forEach((scored, position) => {
      const about = describe(scored.item_id, catalog);
      const isNew = entered.has(scored.item_id);
      const button = element(
        "button",
        { type: "button", title: `Send a click on ${scored.item_id}` },
        element(
          "span",
          { className: "rank" },
          `#${position + 1} · ${scored.item_id} `,
          isNew ? element("span", { className: "badge new" }, "new") : "",
        ),
        element("span", { className: "title" }, about.title),
        element(
          "span",
          { className: "meta" },
          element("span", { className: "category" }, about.category),
          about.price === null ? "" : " · ",
          about.price === null ? "" : element("span", { className: "price" }, about.price),
        ),
        element("span", { className: "score" }, `score ${scored.score.toFixed(3)}`),
      );
      button.addEventListener("click", () => click(scored.item_id));
      const row = element(
        "li",
        { className: isNew ? "item entered" : "item", dataset: { itemId: scored.item_id, category: about.category } },
        button,
      );
      list.append(row);
    });
    $("#shown-user").textContent = recs.user_id;
    $("#model-version").textContent = recs.model_version || "none";
    $("#arm").textContent = recs.arm ? `${recs.arm} (experiment ${recs.experiment_id})` : "no experiment";
    $("#request-id").textContent = recs.request_id;
    $("#list-kind").textContent = recs.fallback
      ? "fallback: popular items (the server could not personalize)"
      : recs.cold_start
        ? "cold start: popular items"
        : "personalized";
  }

  function renderHistory(history, catalog) {
    const list = $("#history-items");
    list.replaceChildren();
    $("#last-event").textContent = history.last_event_ts || "none";
    const rows = history.recent_items.map((item, n) => [item, history.recent_event_types[n]]).reverse();
    for (const [item, eventType] of rows) {
      const about = describe(item, catalog);
      list.append(
        element(
          "li",
          { dataset: { itemId: item, eventType: eventType || "" } },
          element("span", { className: "title" }, about.title),
          " ",
          element("span", { className: "category" }, about.category),
          element("span", { className: "badge event" }, eventType || "?"),
        ),
      );
    }
    if (!rows.length) list.append(element("li", { className: "empty" }, "no events yet"));
  }

  // Ask for the user's list and history again; items not in the last list shown for this user are new.
  async function show(user, message = "") {
    setState("loading", message || `loading ${user}…`);
    const path = encodeURIComponent(user);
    const recs = await api(`v1/recommendations/${path}?k=${K}`);
    let history = null;
    let historyError = null;
    try {
      history = await api(`v1/users/${path}/history`);
    } catch (err) {
      historyError = err.message;
    }
    const ids = recs.items.map((i) => i.item_id).concat(history ? history.recent_items : []);
    const catalog = await lookup(ids);
    const before = page.user === user && page.shown ? page.shown : null;
    const entered = new Set(before ? ids.slice(0, recs.items.length).filter((i) => !before.has(i)) : []);
    renderList(recs, catalog, entered);
    $("#history-error").hidden = !historyError;
    $("#history-error").textContent = historyError ? `history unavailable: ${historyError}` : "";
    if (history) renderHistory(history, catalog);
    else $("#history-items").replaceChildren();
    page.user = user;
    page.shown = new Set(recs.items.map((i) => i.item_id));
    page.requestId = recs.request_id;
    page.generation += 1;
    document.body.dataset.generation = String(page.generation);
    setState("ready", message);
  }

  async function guarded(work) {
    if (page.busy) return;
    page.busy = true;
    document.querySelectorAll("button").forEach((b) => (b.disabled = true));
    try {
      await work();
    } catch (err) {
      setState("error", err.message, true);
    } finally {
      page.busy = false;
      document.querySelectorAll("button").forEach((b) => (b.disabled = false));
    }
  }

  function choose(user) {
    user = user.trim();
    if (!user) return;
    $("#user-id").value = user;
    const url = new URL(window.location.href);
    url.searchParams.set("user", user);
    window.history.replaceState(null, "", url);
    if (user !== page.user) page.shown = null;
    guarded(() => show(user));
  }

  function click(item) {
    const user = page.user;
    guarded(async () => {
      const token = $("#token").value.trim();
      const headers = { "Content-Type": "application/json" };
      if (token) headers.Authorization = `Bearer ${token}`;
      setState("loading", `sending a click on ${item}…`);
      const event = { user_id: user, item_id: item, event_type: "click", request_id: page.requestId };
      const reply = await api("v1/events", { method: "POST", headers, body: JSON.stringify(event) });
      await show(user, `click on ${item} sent (accepted: ${reply.accepted}); list refreshed`);
    });
  }

  function anonymousId() {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    return `anon-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function start() {
    const params = new URLSearchParams(window.location.search);
    const token = $("#token");
    token.value = sessionStorage.getItem(TOKEN_KEY) || "";
    token.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, token.value));
    const examples = (params.get("users") || DEFAULT_EXAMPLES.join(","))
      .split(",")
      .map((u) => u.trim())
      .filter((u) => u && u.length <= 128);
    for (const user of examples) {
      const button = element("button", { type: "button", dataset: { user } }, user);
      button.addEventListener("click", () => choose(user));
      $("#example-users").append(button);
    }
    $("#user-form").addEventListener("submit", (e) => {
      e.preventDefault();
      choose($("#user-id").value);
    });
    $("#anonymous").addEventListener("click", () => choose(anonymousId()));
    if (params.get("user")) choose(params.get("user"));
  }

  start();
})();
