// The approvals page: enrol this phone, list pending logins, approve with a passkey.
// Everything shown comes from the server as text (textContent, never HTML): the
// action text is written by whoever logs in.
"use strict";

const POLL_MS = 1000;
// A new request's Approve button waits this long before it works, so that a
// card appearing at the top cannot take a tap meant for the one below it.
const ARM_MS = 1000;
// How long the browser may take to subscribe at its push service.
const SUBSCRIBE_MS = 30000;
let csrf = "";
let pollTimer = null;
const busy = new Set();  // ids of requests/pairings whose answer is in progress
let pushKey = "";  // the server's VAPID public key (base64url); "" when push is off
let reveal = "";   // the id of a request or pairing a notification was tapped for

const $ = (id) => document.getElementById(id);

function show(id, visible) { $(id).hidden = !visible; }

function say(text, isError) {
  const status = $("status");
  status.textContent = text || "";
  status.classList.toggle("error", Boolean(isError));
}

// -- base64url <-> bytes (WebAuthn's binary fields travel as base64url) ----------

function fromB64url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "===".slice((b64.length + 3) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0)).buffer;
}

function toB64url(buffer) {
  let raw = "";
  for (const byte of new Uint8Array(buffer)) raw += String.fromCharCode(byte);
  return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function creationOptions(options) {
  const publicKey = Object.assign({}, options);
  publicKey.challenge = fromB64url(options.challenge);
  publicKey.user = Object.assign({}, options.user, { id: fromB64url(options.user.id) });
  publicKey.excludeCredentials = (options.excludeCredentials || []).map(
    (c) => Object.assign({}, c, { id: fromB64url(c.id) }));
  return publicKey;
}

function requestOptions(options) {
  const publicKey = Object.assign({}, options);
  publicKey.challenge = fromB64url(options.challenge);
  publicKey.allowCredentials = (options.allowCredentials || []).map(
    (c) => Object.assign({}, c, { id: fromB64url(c.id) }));
  return publicKey;
}

// -- talking to the server --------------------------------------------------------

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `The server answered ${response.status}`);
  return answer;
}

async function assertion(optionsPath) {
  const options = await post(optionsPath);
  const credential = await navigator.credentials.get({ publicKey: requestOptions(options.publicKey) });
  return {
    challengeId: options.challengeId,
    credential: {
      credentialId: toB64url(credential.rawId),
      clientDataJSON: toB64url(credential.response.clientDataJSON),
      authenticatorData: toB64url(credential.response.authenticatorData),
      signature: toB64url(credential.response.signature),
    },
  };
}

function problem(error) {
  if (error && error.name === "NotAllowedError") return "The passkey prompt was cancelled or refused.";
  return (error && error.message) || String(error);
}

// -- enrolment -----------------------------------------------------------------------

async function register(token) {
  $("register").disabled = true;
  say("Registering…");
  try {
    const options = await post("/app/api/enrol/options", { token });
    const credential = await navigator.credentials.create({ publicKey: creationOptions(options.publicKey) });
    await post("/app/api/enrol/complete", {
      token,
      challengeId: options.challengeId,
      credential: {
        clientDataJSON: toB64url(credential.response.clientDataJSON),
        attestationObject: toB64url(credential.response.attestationObject),
      },
    });
    history.replaceState(null, "", "/app/");  // the link is used up; forget it
    show("enrol", false);
    say("This phone is registered.");
    await refresh();
  } catch (error) {
    say(problem(error), true);
    $("register").disabled = false;
  }
}

// -- the list ------------------------------------------------------------------------

function age(seconds) {
  if (seconds < 60) return `${seconds} s ago`;
  return `${Math.floor(seconds / 60)} min ${seconds % 60} s ago`;
}

function requestCard(request) {
  const card = $("request-card").content.firstElementChild.cloneNode(true);
  card.dataset.id = request.id;
  const action = card.querySelector(".action");
  action.id = `action-${request.id}`;
  action.textContent = request.action;
  card.querySelector(".host").textContent = request.terminal;
  card.querySelector(".requester").textContent = request.requester;
  for (const button of card.querySelectorAll("button")) {
    button.setAttribute("aria-describedby", action.id);
  }
  const approveButton = card.querySelector(".approve");
  approveButton.disabled = true;
  setTimeout(() => { if (!busy.has(request.id)) approveButton.disabled = false; }, ARM_MS);
  approveButton.addEventListener("click", () => approve(request, card));
  card.querySelector(".deny").addEventListener("click", () => deny(request.id, card));
  return card;
}

function pairingCard(pairing) {
  const card = $("pairing-card").content.firstElementChild.cloneNode(true);
  card.dataset.id = pairing.id;
  card.querySelector(".requester").textContent = pairing.requester;
  card.querySelector(".accept").addEventListener("click", () => acceptPairing(pairing.id, card));
  card.querySelector(".refuse").addEventListener("click", () => refusePairing(pairing.id, card));
  return card;
}

// Keeps existing cards (and the focus) in place; adds new ones in the server's
// order (newest first) and removes answered ones.
function sync(list, items, make, update) {
  const existing = new Map([...list.children].map((card) => [card.dataset.id, card]));
  const wanted = new Set(items.map((item) => item.id));
  for (const [id, card] of existing) {
    if (!wanted.has(id) && !busy.has(id)) card.remove();
  }
  let previous = null;
  for (const item of items) {
    let card = existing.get(item.id);
    if (!card) card = make(item);
    if (update) update(card, item);
    const next = previous ? previous.nextSibling : list.firstChild;
    if (card !== next) list.insertBefore(card, next);
    previous = card;
  }
}

function render(state) {
  $("who").textContent = `${state.user} · ${state.device}`;
  show("approvals", true);
  show("pairing", true);
  sync($("requests"), state.requests, requestCard,
    (card, request) => { card.querySelector(".age").textContent = age(request.age); });
  show("no-requests", state.requests.length === 0);
  sync($("pairings"), state.pairings, pairingCard, null);
  renderPush(state.push);
  if (reveal) revealCard();
}

// A tapped notification opens the page on its request (or pairing).
function revealCard() {
  const card = [...document.querySelectorAll("#requests > li, #pairings > li")]
    .find((item) => item.dataset.id === reveal);
  reveal = "";
  if (!card) {
    say("That request was already answered or has expired.");
    return;
  }
  for (const other of document.querySelectorAll(".card.revealed")) other.classList.remove("revealed");
  card.classList.add("revealed");
  card.tabIndex = -1;
  card.focus();
  card.scrollIntoView({ block: "center" });
}

function takeRevealFromUrl() {
  const match = location.hash.match(/^#(?:request|pairing)=(.+)$/);
  if (!match) return;
  reveal = decodeURIComponent(match[1]);
  history.replaceState(null, "", "/app/");
}

// -- push notifications -------------------------------------------------------------------

function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function renderPush(push) {
  show("notifications", Boolean(push));
  if (!push) return;
  pushKey = push.key;
  const supported = pushSupported();
  show("push-on", supported && !push.subscribed);
  show("push-off", supported && push.subscribed);
  $("push-state").textContent = !supported
    ? "This browser cannot show notifications for this page (on an iPhone or iPad, add it to the home screen first and open it from there)."
    : push.subscribed
      ? "This phone shows a notification when a login waits for you, also while this page is closed."
      : "Get a notification on this phone when a login waits for you, also while this page is closed.";
}

async function enableNotifications() {
  $("push-on").disabled = true;
  try {
    if (await Notification.requestPermission() !== "granted") {
      throw new Error("Notifications are blocked for this page: allow them in the browser's site settings.");
    }
    const registration = await navigator.serviceWorker.ready;
    let subscription = await registration.pushManager.getSubscription();
    const key = subscription && subscription.options.applicationServerKey;
    if (subscription && (!key || toB64url(key) !== pushKey)) {
      await subscription.unsubscribe();  // made for another server key: useless now
      subscription = null;
    }
    if (!subscription) {
      // The browser asks its vendor's push service; without an answer it would wait forever.
      subscription = await Promise.race([
        registration.pushManager.subscribe({
          userVisibleOnly: true, applicationServerKey: fromB64url(pushKey) }),
        new Promise((_, reject) => setTimeout(() => reject(new Error(
          "the browser's push service did not answer; try again later")), SUBSCRIBE_MS)),
      ]);
    }
    await post("/app/api/push/subscribe", { subscription: subscription.toJSON() });
    say("Notifications are on.");
  } catch (error) {
    say(`Notifications could not be turned on: ${problem(error)}`, true);
  } finally {
    $("push-on").disabled = false;
    refresh();
  }
}

async function disableNotifications() {
  $("push-off").disabled = true;
  try {
    await post("/app/api/push/unsubscribe");
    const registration = await navigator.serviceWorker.ready;
    const subscription = await registration.pushManager.getSubscription();
    if (subscription) await subscription.unsubscribe();
    say("Notifications are off.");
  } catch (error) {
    say(problem(error), true);
  } finally {
    $("push-off").disabled = false;
    refresh();
  }
}

async function refresh() {
  try {
    const response = await fetch("/app/api/state", { credentials: "same-origin" });
    if (response.status === 401) {
      stopPolling();
      show("approvals", false);
      show("pairing", false);
      show("not-enrolled", $("enrol").hidden);
      return false;
    }
    const state = await response.json();
    if (!response.ok) throw new Error(state.error || `The server answered ${response.status}`);
    csrf = state.csrf;
    render(state);
    startPolling();
    return true;
  } catch (error) {
    say(`Cannot reach the server: ${problem(error)}`, true);
    return false;
  }
}

function startPolling() {
  if (pollTimer === null) pollTimer = setInterval(refresh, POLL_MS);
}

function stopPolling() {
  if (pollTimer !== null) clearInterval(pollTimer);
  pollTimer = null;
}

// -- answers ---------------------------------------------------------------------------

async function answer(id, card, work, done) {
  busy.add(id);
  for (const button of card.querySelectorAll("button")) button.disabled = true;
  try {
    await work();
    say(done);
    card.remove();
  } catch (error) {
    say(problem(error), true);
    for (const button of card.querySelectorAll("button")) button.disabled = false;
  } finally {
    busy.delete(id);
    refresh();
  }
}

function approve(request, card) {
  const id = request.id;
  return answer(id, card, async () => {
    say(`Confirm with your passkey to approve: ${request.action} (${request.terminal})`);
    const signed = await assertion(`/app/api/requests/${id}/options`);
    await post(`/app/api/requests/${id}/approve`, signed);
  }, "Approved.");
}

function deny(id, card) {
  return answer(id, card, () => post(`/app/api/requests/${id}/deny`), "Denied.");
}

function acceptPairing(id, card) {
  return answer(id, card, async () => {
    say("Confirm with your passkey…");
    const signed = await assertion(`/app/api/pairings/${id}/options`);
    const result = await post(`/app/api/pairings/${id}/accept`, signed);
    $("otp-qr").src = result.qr;
    $("otp-link").href = result.otpauth;
    $("phrase").textContent = "";
    show("otp", true);
  }, "Paired.");
}

function refusePairing(id, card) {
  return answer(id, card, () => post(`/app/api/pairings/${id}/refuse`), "Pairing refused.");
}

async function makePhrase() {
  try {
    const result = await post("/app/api/phrase");
    $("phrase").textContent = result.phrase;
  } catch (error) {
    say(problem(error), true);
  }
}

function forgetSecret() {
  $("otp-qr").removeAttribute("src");
  $("otp-link").href = "#";
  show("otp", false);
}

// -- start ----------------------------------------------------------------------------------

async function start() {
  $("make-phrase").addEventListener("click", makePhrase);
  $("otp-done").addEventListener("click", forgetSecret);
  $("push-on").addEventListener("click", enableNotifications);
  $("push-off").addEventListener("click", disableNotifications);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
    navigator.serviceWorker.addEventListener("message", (event) => {
      if (event.data && event.data.type === "open" && typeof event.data.id === "string") {
        reveal = event.data.id;
        refresh();
      }
    });
  }
  takeRevealFromUrl();
  window.addEventListener("hashchange", () => {
    takeRevealFromUrl();
    if (reveal) refresh();
  });
  const token = location.pathname === "/app/enrol" ? location.hash.slice(1) : "";
  if (token) {
    show("enrol", true);
    $("register").addEventListener("click", () => register(token));
    return;
  }
  if (!window.PublicKeyCredential) {
    say("This browser cannot use passkeys here (it needs https, or http://localhost).", true);
  }
  await refresh();
}

document.addEventListener("DOMContentLoaded", start);
