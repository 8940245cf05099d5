// Service worker of the approvals page: it makes the page installable.
// It caches nothing: approvals must always come from the server.
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// Web Push: a "push" event handler (showing a notification that opens /app/)
// goes here.
