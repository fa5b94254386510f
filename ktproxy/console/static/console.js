/* ktproxy console — the application: sign-in, sign-out and hash routing.
 *
 * Routes: #/events[?filters], #/events/<id>, #/overview[?range=..], #/policy.
 * Each view is `KT.views[name].mount(container, route)` returning a controller with
 * `update(route)` (same view, new parameters) and `unmount()` (stop timers).
 */
"use strict";

(function () {
  const KT = window.KT;
  const TITLES = { events: "Events", detail: "Event", overview: "Overview", policy: "Policy" };
  let current = null; // {name, controller}

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, queryText] = raw.split("?", 2);
    const params = Object.fromEntries(new URLSearchParams(queryText || ""));
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "events" && parts[1]) return { name: "detail", id: parts[1], params };
    if (parts[0] === "overview" || parts[0] === "policy" || parts[0] === "events") return { name: parts[0], params };
    return { name: "events", params, redirect: true };
  }

  function setNav(name) {
    const section = name === "detail" ? "events" : name;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.view === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function unmount() {
    if (current && current.controller && current.controller.unmount) current.controller.unmount();
    current = null;
  }

  function route() {
    if (!KT.key.get()) {
      showSignIn();
      return;
    }
    const r = parseHash();
    if (r.redirect) {
      history.replaceState(null, "", "#/events");
    }
    document.getElementById("signin-view").hidden = true;
    document.getElementById("nav").hidden = false;
    document.getElementById("signout").hidden = false;
    setNav(r.name);
    document.title = (TITLES[r.name] || "Console") + " · ktproxy console";
    if (current && current.name === r.name && current.controller.update) {
      current.controller.update(r);
      return;
    }
    unmount();
    KT.banner.hide();
    const container = KT.clear(document.getElementById("view"));
    const view = KT.views[r.name];
    current = { name: r.name, controller: view.mount(container, r) };
  }

  /* ---------- sign-in ---------- */

  function showSignIn(message) {
    unmount();
    KT.clear(document.getElementById("view"));
    document.getElementById("nav").hidden = true;
    document.getElementById("signout").hidden = true;
    document.getElementById("signin-view").hidden = false;
    document.title = "Sign in · ktproxy console";
    const error = document.getElementById("signin-error");
    if (message) {
      error.textContent = message;
      error.hidden = false;
    }
    const input = document.getElementById("signin-key");
    input.focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const input = document.getElementById("signin-key");
    const error = document.getElementById("signin-error");
    const submit = document.getElementById("signin-submit");
    const key = input.value.trim();
    error.hidden = true;
    input.removeAttribute("aria-invalid");
    if (!key) {
      fail("Enter the admin key.");
      return;
    }
    submit.disabled = true;
    submit.textContent = "Checking…";
    try {
      await KT.api("/v1/kt/events?limit=1", { key });
      accept(key);
    } catch (err) {
      if (err.code === "audit_disabled" || err.code === "audit_store_unavailable") {
        accept(key); // the key is right; the events page explains the store's state
      } else if (err.status === 401) {
        fail("That admin key was not accepted. Check the key and try again.");
      } else if (err.code === "admin_disabled" || err.status === 404) {
        fail("The admin API is disabled on this gateway. Set admin.key in the policy config (for example admin: {key: {env: KT_ADMIN_KEY}}) and reload the gateway.");
      } else {
        fail(err.message || "Sign-in failed.");
      }
    } finally {
      submit.disabled = false;
      submit.textContent = "Sign in";
    }

    function fail(message) {
      error.textContent = message;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
      input.focus();
      input.select();
    }
  }

  function accept(key) {
    KT.key.set(key);
    const input = document.getElementById("signin-key");
    input.value = "";
    document.getElementById("signin-error").hidden = true;
    input.removeAttribute("aria-invalid");
    route();
    document.getElementById("main").focus();
    KT.announce("Signed in");
  }

  function signOut() {
    KT.key.clear();
    KT.banner.hide();
    history.replaceState(null, "", "#/events");
    showSignIn();
    KT.announce("Signed out");
  }

  KT.onUnauthorized = function () {
    KT.key.clear();
    showSignIn("The admin key is no longer accepted (the config may have changed). Sign in again.");
  };

  /** Escape leaves an event's detail for the list it came from. */
  function onKey(event) {
    if (event.key === "Escape" && current && current.name === "detail" && !event.defaultPrevented) {
      event.preventDefault();
      KT.backToEvents();
    }
  }

  KT.lastEventsHash = "#/events";
  KT.backToEvents = function () {
    location.hash = KT.lastEventsHash;
  };

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("signin-form").addEventListener("submit", signIn);
    document.getElementById("signout").addEventListener("click", signOut);
    document.getElementById("banner-close").addEventListener("click", () => KT.banner.hide());
    document.addEventListener("keydown", onKey);
    window.addEventListener("hashchange", route);
    route();
  });
})();
