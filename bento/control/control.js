// AI-OBS control page: the operator's view of a room the service directs.
//
// Everything it fetches needs the service token (Authorization: Bearer), which the operator types in; it is kept in
// this tab's sessionStorage only (never in a URL, never in localStorage). The page polls live_status twice a second
// and joins the LiveKit room with an operator token from live_token: it subscribes to the director's `program`
// tracks only. Take / lock / release go through the service's live_override (the same validation and queue as an
// operator's `aiobs.override` data packet); live_status then says what the director made of each (obeyed, or
// rejected and why). A camera without a picture (stale), or not in the director's last tick yet, cannot be taken
// or locked: its buttons are off.
"use strict";

(() => {
  const TOKEN_KEY = "aiobs.serviceToken";
  const OPERATOR_KEY = "aiobs.operator";
  const ROOM_KEY = "aiobs.room";
  const TAB_KEY = "aiobs.tab";
  const POLL_MS = 500;
  const ROOMS_EVERY_MS = 10000;
  const REJOIN_MS = 3000;
  const ROLE_ATTRIBUTE = "aiobs.role";
  const $ = (id) => document.getElementById(id);

  let serviceToken = sessionStorage.getItem(TOKEN_KEY) || "";
  let roomName = "";
  let running = false;       // polling (signed in)
  let pollTimer = null;
  let roomsAt = 0;           // when the room list was last read
  let cards = new Map();     // camera id -> its card element
  let lk = null;             // the LiveKit room the page joined (LivekitClient.Room)
  let lkRoom = "";           // ... and its name
  let joinGen = 0;           // bumps on every (re)join or leave: a stale join gives up
  let rejoinTimer = null;
  let lastStatus = null;
  let overrideSeen = null;   // the latest override outcome seen (live_status recent_overrides); null: none yet

  class HttpError extends Error {
    constructor(status, body) {
      const what = body && typeof body.error === "string" ? body.error : `HTTP ${status}`;
      super(status === 401 ? `unauthorized (HTTP 401): ${what}` : `HTTP ${status}: ${what}`);
      this.status = status;
    }
  }

  async function call(api, body) {
    const r = await fetch("/" + api, {
      method: "POST", cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + serviceToken},
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) throw new HttpError(r.status, data);
    return data;
  }

  // -- messages ----------------------------------------------------------------------------------------------------
  function showError(msg) {
    const el = $("error");
    el.textContent = msg || "";
    el.hidden = !msg;
  }

  function note(msg) { $("sent").textContent = msg; }

  function pill(id, text, cls) {
    const el = $(id);
    el.textContent = text;
    el.className = "pill" + (cls ? " " + cls : "");
  }

  // -- signing in and out ------------------------------------------------------------------------------------------
  function showAuth(msg) {
    running = false;
    clearTimeout(pollTimer);
    leaveLiveKit();
    $("auth").hidden = false;
    $("console").hidden = true;
    $("signout").hidden = true;
    $("room").disabled = true;
    clearConsole();
    pill("link", "not signed in", "");
    showError(msg || "");
    $("token").focus();
  }

  function signOut(msg) {
    serviceToken = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showAuth(msg);
  }

  function operatorName() {
    const v = ($("operator").value || "").trim() || "operator";
    return v.slice(0, 48);
  }

  // this tab's participant: the operator's name, a suffix of the tab's own and the join's number, so that two tabs (or
  // two operators of the same name) never share an identity (LiveKit disconnects the older participant of an
  // identity), and a rejoin never replaces the participant it follows (a replaced identity can leave the director
  // without a record of the new one for a moment: its overrides would be refused)
  let joins = 0;
  function operatorIdentity() {
    let tab = sessionStorage.getItem(TAB_KEY);
    if (!tab) {
      tab = Array.from(crypto.getRandomValues(new Uint8Array(3)), (b) => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem(TAB_KEY, tab);
    }
    joins += 1;
    return `${operatorName()}-${tab}-${joins}`;
  }

  function signIn() {
    const token = $("token").value.trim();
    $("token").value = "";
    if (!token) { showError("enter the service token"); return; }
    serviceToken = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.setItem(OPERATOR_KEY, operatorName());
    start();
  }

  async function start() {
    showError("");
    $("auth").hidden = true;
    $("signout").hidden = false;
    running = true;
    roomsAt = 0;
    poll();
  }

  // -- the room list and the status poll ---------------------------------------------------------------------------
  async function refreshRooms() {
    const all = await call("live_status", {});
    roomsAt = Date.now();
    const names = Object.keys(all.rooms || {}).sort();
    const sel = $("room");
    const have = Array.from(sel.options).map((o) => o.value);
    if (have.join("\n") !== names.join("\n")) {
      sel.replaceChildren(...names.map((n) => { const o = document.createElement("option"); o.value = n;
                                                o.textContent = n; return o; }));
    }
    sel.disabled = names.length === 0;
    const wanted = roomName || new URLSearchParams(location.search).get("room") || sessionStorage.getItem(ROOM_KEY);
    const pick = names.includes(wanted) ? wanted : (names[0] || "");
    if (pick !== roomName) selectRoom(pick);
    sel.value = pick;
    if (!names.length) {
      showError("no room is directed by the service: start one with live_start");
    }
    return names;
  }

  function selectRoom(name) {
    roomName = name;
    if (name) sessionStorage.setItem(ROOM_KEY, name);
    lastStatus = null;
    clearConsole();
    if (!name) { leaveLiveKit(); $("console").hidden = true; return; }
    joinLiveKit(name);
  }

  async function poll() {
    if (!running) return;
    try {
      if (!roomName || Date.now() - roomsAt > ROOMS_EVERY_MS) await refreshRooms();
      if (roomName) {
        const status = await call("live_status", {room: roomName});
        if (!running) return;
        showError(status.error ? `room ${status.room} ${status.state}: ${status.error}` : "");
        render(status);
      }
    } catch (e) {
      if (!running) return;
      if (e.status === 401) { signOut(e.message + " — the service refused this token"); return; }
      if (e.status === 404) { roomName = ""; roomsAt = 0; }  // the room was stopped: read the list again
      showError(e.message || String(e));
    }
    if (running) pollTimer = setTimeout(poll, POLL_MS);
  }

  // -- rendering -----------------------------------------------------------------------------------------------------
  function clearConsole() {
    cards = new Map();
    $("grid").replaceChildren();
    $("cuts").tBodies[0].replaceChildren();
    $("on-air").textContent = "–";
    $("reason").textContent = "–";
    $("detail").textContent = "";
    $("meta").textContent = "";
    note("");
    $("sent").classList.remove("rejected");
    overrideSeen = null;  // a room's past overrides are not news
  }

  function fmt(x, digits) { return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "–"; }

  function render(s) {
    lastStatus = s;
    $("console").hidden = false;
    const link = s.link || "?";
    pill("link", `${s.room}: ${s.state || "?"}, link ${link}`, link === "connected" && s.state === "running" ? "ok"
         : s.state === "failed" ? "bad" : "warn");
    const program = s.program || "";
    $("on-air").textContent = program || "–";
    $("reason").textContent = s.decision ? s.decision.reason : "–";
    $("detail").textContent = s.decision && s.decision.detail ? s.decision.detail : "";
    const h = s.health || {};
    $("meta").textContent = [`t ${fmt(s.t, 1)} s`, `ranker ${s.variant || "–"}` +
                             (s.model_version ? ` ${s.model_version}` : ""),
                             `ticks ${h.ticks ?? "–"} (missed ${h.missed_ticks ?? 0}, failed ${h.failed_ticks ?? 0})`,
                             `overrides ${h.overrides ?? 0}` + (h.unauthorised_overrides ?
                               ` (${h.unauthorised_overrides} unauthorised)` : ""),
                             `delay ${fmt(s.program_delay_s, 1)} s`].join(" · ");

    const cams = s.cameras || {};
    const names = Object.keys(cams).sort();
    const scores = names.map((n) => cams[n].score).filter((x) => typeof x === "number" && isFinite(x));
    const top = Math.max(1e-9, ...scores.map(Math.abs));
    for (const [name, card] of cards) {
      if (!(name in cams)) { card.remove(); cards.delete(name); }
    }
    const grid = $("grid");
    names.forEach((name, i) => {
      let card = cards.get(name);
      if (!card) {
        card = $("card-template").content.firstElementChild.cloneNode(true);
        card.dataset.camera = name;
        card.querySelector(".name").textContent = name;
        cards.set(name, card);
      }
      if (grid.children[i] !== card) grid.insertBefore(card, grid.children[i] || null);
      const c = cams[name];
      const onAir = name === program;
      const locked = onAir && s.decision && (s.decision.reason === "locked" || s.decision.reason === "override_lock");
      card.classList.toggle("program", onAir);
      card.classList.toggle("locked", !!locked);
      card.querySelector(".tally").textContent = onAir ? (locked ? "PGM · LOCKED" : "PGM") : "";
      const score = card.querySelector(".score");
      score.textContent = fmt(c.score, 3);
      card.dataset.score = typeof c.score === "number" ? String(c.score) : "";
      const w = typeof c.score === "number" && isFinite(c.score) ? Math.max(0, c.score) / top : 0;
      card.querySelector(".fill").style.width = `${Math.round(Math.min(1, w) * 100)}%`;
      const badges = [];
      if (!c.in_tick) badges.push("not in the director's tick yet");
      else if (c.stale) badges.push("no picture");
      if (c.talking) badges.push("talking");
      if (c.floor) badges.push("floor");
      card.querySelector(".badges").textContent = badges.join(" · ");
      const takeable = !!c.in_tick && !c.stale;
      card.classList.toggle("stale", !takeable);
      const joined = lk && lk.state === "connected";
      for (const b of card.querySelectorAll("button")) {  // the director cuts only to a camera it scored, with a picture
        b.disabled = !joined || (!takeable && b.dataset.action !== "release");
      }
    });

    // what the director made of the overrides since the last poll: obeyed, rejected and why, or ignored (the
    // one-tick decision that says so is easily missed between two polls); those before the page opened the room
    // are not news
    const ovs = s.recent_overrides || [];
    const keys = ovs.map((o) => JSON.stringify(o));
    const fresh = overrideSeen === null ? [] : ovs.slice(keys.lastIndexOf(overrideSeen) + 1);
    overrideSeen = keys.length ? keys[keys.length - 1] : "";
    if (fresh.length) {
      note(fresh.map((ov) => {
        const what = `${ov.action}${ov.camera ? " " + ov.camera : ""}${ov.operator ? " by " + ov.operator : ""}`;
        return `${what} ${ov.outcome} (t ${fmt(ov.t, 1)} s)` + (ov.outcome === "obeyed" ? "" : `: ${ov.detail}`);
      }).join("; "));
      $("sent").classList.toggle("rejected", fresh.some((ov) => ov.outcome === "rejected"));
    }

    const body = $("cuts").tBodies[0];
    const rows = (s.recent_cuts || []).slice().reverse().map((cut) => {
      const tr = document.createElement("tr");
      for (const v of [fmt(cut.t, 1), cut.to, cut.reason]) {
        const td = document.createElement("td");
        td.textContent = v;
        tr.appendChild(td);
      }
      return tr;
    });
    body.replaceChildren(...rows);
  }

  // -- the LiveKit room: the program, and the overrides -------------------------------------------------------------
  function isProgram(pub, participant) {
    const attrs = participant && participant.attributes ? participant.attributes : {};
    return pub.trackName === "program" && attrs[ROLE_ATTRIBUTE] === "director";
  }

  function maybeSubscribe(pub, participant) {
    if (isProgram(pub, participant) && !pub.isSubscribed) pub.setSubscribed(true);
  }

  function onSubscribed(track, pub, participant) {
    const L = window.LivekitClient;
    if (!isProgram(pub, participant)) return;
    if (track.kind === L.Track.Kind.Video) {
      track.attach($("program"));
    } else if (track.kind === L.Track.Kind.Audio) {
      track.attach($("program-audio"));
      $("sound").hidden = lk ? lk.canPlaybackAudio : true;
    }
  }

  function leaveLiveKit() {
    joinGen += 1;
    clearTimeout(rejoinTimer);
    const room = lk;
    lk = null;
    lkRoom = "";
    if (room) room.disconnect();
    pill("lk", "program: not joined", "");
  }

  function scheduleRejoin(name, why) {
    pill("lk", `program: ${why}; retrying`, "bad");
    clearTimeout(rejoinTimer);
    rejoinTimer = setTimeout(() => { if (running && roomName === name) joinLiveKit(name); }, REJOIN_MS);
  }

  async function joinLiveKit(name) {
    leaveLiveKit();
    const gen = joinGen;
    const L = window.LivekitClient;
    if (!L) {
      pill("lk", "program: the LiveKit JS client is not installed (run ./dev.sh setup)", "bad");
      return;
    }
    pill("lk", "program: joining", "warn");
    let grant;
    try {
      grant = await call("live_token", {room: name, identity: operatorIdentity()});
    } catch (e) {
      if (gen !== joinGen) return;
      if (e.status === 401) { signOut(e.message); return; }
      scheduleRejoin(name, e.message);
      return;
    }
    if (gen !== joinGen) return;
    const room = new L.Room({adaptiveStream: false, dynacast: false});
    lk = room;
    lkRoom = name;
    room.on(L.RoomEvent.TrackPublished, (pub, participant) => maybeSubscribe(pub, participant));
    room.on(L.RoomEvent.ParticipantAttributesChanged, (changed, participant) => {
      for (const pub of participant.trackPublications.values()) maybeSubscribe(pub, participant);
    });
    room.on(L.RoomEvent.TrackSubscribed, onSubscribed);
    room.on(L.RoomEvent.TrackUnsubscribed, (track) => track.detach());
    room.on(L.RoomEvent.AudioPlaybackStatusChanged, () => { $("sound").hidden = room.canPlaybackAudio; });
    room.on(L.RoomEvent.ConnectionStateChanged, (state) => {
      if (lk === room) pill("lk", `program: ${state} as ${grant.identity}`, state === "connected" ? "ok" : "warn");
      if (lastStatus) render(lastStatus);
    });
    room.on(L.RoomEvent.Disconnected, (reason) => {
      if (lk !== room) return;  // left on purpose
      lk = null;
      const why = (L.DisconnectReason && L.DisconnectReason[reason]) || String(reason ?? "?");
      if (reason === L.DisconnectReason.DUPLICATE_IDENTITY) {  // another page took this identity: no tug of war
        pill("lk", `program: left the room (${why}: ${grant.identity} joined elsewhere); reload to rejoin`, "bad");
        return;
      }
      scheduleRejoin(name, `left the room (${why})`);
    });
    try {
      await room.connect(grant.url, grant.token, {autoSubscribe: false});
    } catch (e) {
      if (lk !== room) return;
      lk = null;
      scheduleRejoin(name, `cannot join ${grant.url}: ${e.message || e}`);
      return;
    }
    if (lk !== room) { room.disconnect(); return; }
    pill("lk", `program: connected as ${grant.identity}`, "ok");
    for (const p of room.remoteParticipants.values()) {
      for (const pub of p.trackPublications.values()) maybeSubscribe(pub, p);
    }
    if (lastStatus) render(lastStatus);
  }

  // take / lock / release go through the service (bearer token checked, the same validation as an operator's
  // `aiobs.override` data packet): the answer says at once whether the director queued it
  async function sendOverride(action, camera) {
    if (!roomName) { note(`no room: ${action} ${camera} not sent`); return; }
    const msg = {room: roomName, action, camera, operator: `operator:${operatorName()}`};
    if (action === "release") delete msg.camera;
    if (action === "lock") {
      const s = parseFloat($("lock-s").value);
      if (isFinite(s) && s > 0) msg.timeout_s = Math.min(s, 86400);
    }
    const what = action === "release" ? "release" : `${action} ${camera}`;
    const seen = overrideSeen;
    try {
      await call("live_override", msg);
      if (overrideSeen === seen) {  // (a poll that came back first already says what became of it)
        const t = lastStatus && typeof lastStatus.t === "number" ? `after t ${fmt(lastStatus.t, 1)} s`
          : "before the first tick";
        note(`${what} sent ${t}: queued for the next tick`);  // in the session's seconds, as its outcome is
        $("sent").classList.remove("rejected");
      }
    } catch (e) {
      note(`${what} refused: ${e.message || e}`);
      $("sent").classList.add("rejected");
    }
  }

  // -- wiring ---------------------------------------------------------------------------------------------------------
  $("connect").addEventListener("click", signIn);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") signIn(); });
  $("signout").addEventListener("click", () => signOut("signed out"));
  $("room").addEventListener("change", (e) => { selectRoom(e.target.value); });
  $("sound").addEventListener("click", async () => {
    if (lk) { await lk.startAudio(); $("sound").hidden = lk.canPlaybackAudio; }
  });
  $("grid").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-action]");
    const card = b && b.closest(".card");
    if (b && card) sendOverride(b.dataset.action, card.dataset.camera);
  });
  $("operator").value = sessionStorage.getItem(OPERATOR_KEY) || "operator";
  if (!window.LivekitClient) {
    showError("the LiveKit JS client did not load (/control/static/vendor/livekit-client.umd.js): run ./dev.sh " +
              "setup; scores and cuts still show, the program and the override buttons need it");
  }
  if (serviceToken) start(); else showAuth("not signed in: this page shows nothing without the service token");
  window.addEventListener("pagehide", () => { if (lk) lk.disconnect(); });
})();
