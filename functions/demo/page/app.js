// The demo group chat: plain JS over the public API (/v1/...) plus the two
// demo-mode endpoints. Each tab keeps its own member (sessionStorage), so
// several tabs are several members; tabs of one browser also learn of new
// packets through a BroadcastChannel, and anyone can open a packet's link.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1500;
const state = {
  user: sessionStorage.getItem("hongbao.user"),
  token: sessionStorage.getItem("hongbao.token"),
  packets: new Map(), // id -> { view, mine: claim view or null, element }
  poll: null,
  // The wrap being sent: retried with the same request_id (wrap is
  // idempotent per request id), so a failed payment never leaves a second
  // unpaid packet behind.
  sending: null, // { terms: JSON of the form, request_id }
};
const channel = "BroadcastChannel" in window ? new BroadcastChannel("hongbao-demo") : null;

const yuan = (fen) => `¥${(fen / 100).toFixed(2)}`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Every failure is shown in words: the API's own code and message.
function showError(error) {
  const box = $("error");
  box.textContent = error.message;
  box.hidden = false;
  box.dataset.count = String(Number(box.dataset.count) + 1);
}

class ApiError extends Error {}

async function api(method, path, body) {
  const headers = { "content-type": "application/json" };
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(`The service did not answer (${e.message}).`);
  }
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* shown below */ }
  if (!response.ok) {
    const err = json && json.error;
    const words = err ? `${err.code}: ${err.message}` : `HTTP ${response.status}: ${text.slice(0, 200)}`;
    // An expired token, or demo mode turned off: back to the sign-in.
    if (response.status === 401 && state.token) signOut();
    throw new ApiError(`${method} ${path} failed: ${words}`);
  }
  if (json === null) throw new ApiError(`${method} ${path} answered something that is not JSON.`);
  return json;
}

async function signIn(name) {
  const answer = await api("POST", "/v1/demo/sign-in", { name });
  state.user = answer.user;
  state.token = answer.token;
  sessionStorage.setItem("hongbao.user", state.user);
  sessionStorage.setItem("hongbao.token", state.token);
  enterRoom();
}

function enterRoom() {
  $("sign-in-panel").hidden = true;
  $("room").hidden = false;
  $("who").hidden = false;
  $("me").textContent = state.user;
  const shared = packetIdFrom(location.hash);
  if (shared) show(shared).catch(showError);
  refresh();
  state.poll = setInterval(refresh, POLL_MS);
}

function signOut() {
  clearInterval(state.poll);
  sessionStorage.clear();
  Object.assign(state, { user: null, token: null, poll: null, sending: null });
  state.packets.clear();
  $("chat").replaceChildren();
  $("room").hidden = true;
  $("who").hidden = true;
  $("sign-in-panel").hidden = false;
}

function packetIdFrom(text) {
  const match = /(?:#p=)?([0-9a-z]{20,64})\s*$/.exec(text.trim());
  return match ? match[1] : null;
}

function shareLink(id) {
  return `${location.origin}/demo/#p=${id}`;
}

// Adds a packet's bubble to the chat (once) and loads it.
async function show(id) {
  if (state.packets.has(id)) return;
  const entry = { view: null, mine: null, element: el("div", { class: "message", "data-packet": id }) };
  state.packets.set(id, entry);
  $("chat").append(entry.element);
  try {
    await load(id);
  } catch (e) {
    // Not a packet this member can see: no bubble, and no poll of it.
    state.packets.delete(id);
    entry.element.remove();
    throw e;
  }
}

async function load(id) {
  const entry = state.packets.get(id);
  entry.view = await api("GET", `/v1/packets/${id}`);
  entry.mine = entry.view.claims.find((c) => c.user === state.user) || entry.mine;
  render(entry);
}

function statusWords(view) {
  const left = `${view.remaining_count} of ${view.count} left`;
  switch (view.status) {
    case "awaiting_payment": return "waiting for payment";
    case "active": return `${left} · ${yuan(view.remaining_fen)} to grab`;
    case "exhausted": return "all opened 已被领完";
    case "refunded": return `expired · ${yuan(view.refund_fen)} refunded to ${view.sender} 已退回`;
    case "expired": return "expired 已过期";
    default: return view.status;
  }
}

function render(entry) {
  const view = entry.view;
  const mine = view.sender === state.user;
  const done = view.status !== "active" || entry.mine !== null;
  const bubble = el("div", { class: `bubble${done ? " done" : ""}`, role: "button", tabindex: "0",
      title: "open 拆红包", onclick: () => openPacket(view.id),
      onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); openPacket(view.id); } } },
    el("div", { class: "face" },
      el("div", { class: "seal" }, "福"),
      el("div", {},
        el("div", { class: "greeting" }, view.greeting || "恭喜发财，大吉大利"),
        el("div", { class: "state", "data-status": view.status }, statusWords(view)))),
    el("div", { class: "foot" }, `${view.kind === "lucky" ? "拼手气红包 lucky" : "普通红包 fixed"} · ${yuan(view.total_fen)} in ${view.count}`));
  const details = el("div", { class: "details" });
  if (entry.mine) details.append(el("div", { class: "mine-amount", "data-mine": entry.mine.amount_fen }, yuan(entry.mine.amount_fen)));
  if (mine) details.append(el("div", { class: "share" }, "Share: ", el("a", { href: shareLink(view.id), class: "share-link" }, shareLink(view.id))));
  if (view.claims.length > 0) {
    const list = el("ol", { class: "claims" });
    for (const claim of view.claims) {
      const item = el("li", { "data-user": claim.user, "data-amount": claim.amount_fen }, el("span", {}, claim.user), el("span", {}, yuan(claim.amount_fen)));
      if (view.best_luck === claim.user) item.firstChild.append(el("span", { class: "best-luck" }, "👑 手气最佳"));
      list.append(item);
    }
    details.append(list);
  } else if (!mine && !entry.mine) {
    details.append(el("div", { class: "hint" }, "Open it to see who got what."));
  }
  entry.element.replaceChildren(el("div", { class: "from" }, mine ? "you" : view.sender), bubble, details);
  entry.element.classList.toggle("mine", mine);
}

async function openPacket(id) {
  const entry = state.packets.get(id);
  if (entry.mine || entry.view.status !== "active") return;
  $("opening").hidden = false;
  try {
    const { ticket } = await api("POST", `/v1/packets/${id}/grab`);
    const opened = await api("POST", `/v1/packets/${id}/open`, { ticket });
    entry.mine = opened.claim;
    await new Promise((done) => setTimeout(done, 600)); // let the coin turn
  } catch (e) {
    showError(e);
  } finally {
    $("opening").hidden = true;
  }
  await load(id).catch(showError);
}

async function sendPacket() {
  const terms = {
    kind: $("kind").value,
    total_fen: Math.round(Number($("total").value) * 100),
    count: Number($("count").value),
    greeting: $("greeting").value || null,
  };
  const key = JSON.stringify(terms);
  if (!state.sending || state.sending.terms !== key) {
    state.sending = { terms: key, request_id: `demo-${Date.now()}-${Math.random().toString(36).slice(2, 8)}` };
  }
  const wrapped = await api("POST", "/v1/packets", { request_id: state.sending.request_id, ...terms });
  await api("POST", "/v1/demo/payment", { packet_id: wrapped.id });
  state.sending = null;
  await show(wrapped.id);
  if (channel) channel.postMessage({ packet: wrapped.id });
}

async function refreshWallet() {
  const wallet = await api("GET", "/v1/users/me/wallet");
  $("balance").textContent = yuan(wallet.balance_fen);
  $("balance").dataset.fen = wallet.balance_fen;
  $("wallet").replaceChildren(...wallet.entries.map((e) =>
    el("li", { "data-kind": e.kind }, `${e.kind === "claim" ? "claimed" : "refund of"} ${yuan(e.amount_fen)} · packet ${e.packet_id.slice(-6)}`)));
}

let refreshing = false;
async function refresh() {
  if (refreshing) return; // a slow answer must not pile up polls
  refreshing = true;
  try {
    // Only an active packet changes (a claim, its refund): poll those.
    const live = [...state.packets.entries()].filter(([, p]) => p.view && p.view.status === "active");
    const results = await Promise.allSettled([refreshWallet(), ...live.map(([id]) => load(id))]);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) showError(failed.reason);
  } finally {
    refreshing = false;
  }
}

function guard(action) {
  return async (event) => {
    event.preventDefault();
    const button = event.target.querySelector("button");
    if (button) button.disabled = true;
    try { await action(); } catch (e) { showError(e); } finally { if (button) button.disabled = false; }
  };
}

$("sign-in").addEventListener("submit", guard(() => signIn($("name").value.trim())));
$("wrap").addEventListener("submit", guard(sendPacket));
$("join").addEventListener("submit", guard(async () => {
  const id = packetIdFrom($("join-id").value);
  if (!id) throw new ApiError("That is not a packet link or id.");
  await show(id);
}));
window.addEventListener("hashchange", () => { const id = packetIdFrom(location.hash); if (id && state.token) show(id).catch(showError); });
if (channel) channel.onmessage = (event) => { if (state.token && event.data.packet) show(event.data.packet).catch(showError); };
if (state.token) enterRoom();
