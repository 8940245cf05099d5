// Service worker of the approvals page: it makes the page installable.
// It caches nothing: approvals must always come from the server.
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// Web Push: the server's push names only what waits ({"kind": "request" or
// "pairing", "id"}); what it is for comes from the server itself, with this
// phone's session, so the browser vendor's push service learns nothing more.
// Every push shows a notification (the page subscribed with userVisibleOnly).
self.addEventListener("push", (event) => {
  let message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch (error) {
    message = {};
  }
  event.waitUntil(notify(message));
});

async function notify(message) {
  const kind = message.kind === "pairing" ? "pairing" : "request";
  const id = typeof message.id === "string" ? message.id : "";
  const text = await describe(kind, id);
  await self.registration.showNotification(text.title, {
    body: text.body,
    tag: `${kind}-${id}`,
    icon: "/app/icon.svg",
    requireInteraction: true,
    data: { kind, id },
  });
}

async function describe(kind, id) {
  const fallback = { title: "Login approvals", body: "Something is waiting for your answer." };
  try {
    const response = await fetch("/app/api/state", { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) return fallback;
    const state = await response.json();
    if (kind === "pairing") {
      const pairing = state.pairings.find((p) => p.id === id);
      return pairing ? { title: "Pair this phone?", body: `Requested by ${pairing.requester}` }
                     : { title: "Pairing", body: "This pairing was already answered." };
    }
    const request = state.requests.find((r) => r.id === id);
    if (!request) return { title: "Login approvals", body: "This login was already answered or has expired." };
    return { title: `Approve a login on ${request.terminal}?`, body: request.action };
  } catch (error) {
    return fallback;
  }
}

// A tap opens the page on that request (an open page is focused and told).
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const { kind, id } = event.notification.data || {};
  const url = id ? `/app/#${kind}=${encodeURIComponent(id)}` : "/app/";
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    const page = windows.find((client) => new URL(client.url).pathname.startsWith("/app/"));
    if (page) {
      await page.focus();
      page.postMessage({ type: "open", kind, id });
      return;
    }
    await self.clients.openWindow(url);
  })());
});
