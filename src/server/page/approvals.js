// The approvals page: lists the org's pending actions live (WebSocket feed)
// and decides them through the API. The key stays in this tab's session
// storage and travels only in Authorization headers and the WebSocket
// subprotocol: no cookie, so no cross-site request can act with it.
"use strict";

const list = document.getElementById("list");
const state = document.getElementById("state");
const errorBox = document.getElementById("error");
const keyInput = document.getElementById("key");
const cards = new Map();
let socket = null;

function key() { return sessionStorage.getItem("tollgate-key") || ""; }

function show(a) {
  let card = cards.get(a.id);
  if (a.status !== "pending") {
    if (card) { card.remove(); cards.delete(a.id); }
    return;
  }
  if (!card) {
    card = document.getElementById("card").content.firstElementChild.cloneNode(true);
    card.dataset.id = a.id;
    card.querySelector(".approve").addEventListener("click", () => decide(a.id, "approve", card));
    card.querySelector(".deny").addEventListener("click", () => decide(a.id, "deny", card));
    cards.set(a.id, card);
    list.appendChild(card);
  }
  card.querySelector(".tool").textContent = a.tool;
  card.querySelector(".who").textContent = a.principal + " (team " + a.team + ")";
  card.querySelector(".cost").textContent = a.estimated_cost;
  card.querySelector(".expires").textContent = a.expires_at;
  card.querySelector(".status").textContent = a.status;
  card.querySelector(".why").textContent = a.reason;
  card.querySelector(".args").textContent = JSON.stringify(a.arguments, null, 2);
}

async function decide(id, decision, card) {
  errorBox.textContent = "";
  const reason = card.querySelector(".reason").value;
  const r = await fetch("/v1/approvals/" + encodeURIComponent(id) + "/decision", {
    method: "POST",
    headers: { "Authorization": "Bearer " + key(), "Content-Type": "application/json" },
    body: JSON.stringify({ decision, reason }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) { errorBox.textContent = body.message || ("HTTP " + r.status); }
  if (body.approval) { show(body.approval); }
}

function connect() {
  if (socket) { socket.close(); }
  cards.forEach((c) => c.remove());
  cards.clear();
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  socket = new WebSocket(scheme + location.host + "/v1/approvals/stream", ["tollgate.v1", "bearer." + key()]);
  state.textContent = "connecting…";
  socket.onopen = () => { state.textContent = "live"; };
  socket.onclose = () => { state.textContent = "disconnected"; };
  socket.onerror = () => { errorBox.textContent = "the live feed refused this key or is unreachable"; };
  socket.onmessage = (m) => {
    const msg = JSON.parse(m.data);
    if (msg.type === "snapshot") { msg.approvals.forEach(show); }
    else if (msg.type === "approval") { show(msg.approval); }
  };
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("tollgate-key", keyInput.value.trim());
  keyInput.value = "";
  connect();
});

if (key()) { connect(); }
