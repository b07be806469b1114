// ArgusNet dashboard: plain JavaScript, no build step, nothing fetched from elsewhere. Every value from the API is
// put in the page with textContent or as an attribute, never as HTML (names are user input).
"use strict";

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
const isAdmin = () => document.body.dataset.role === "admin";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function toast(message, bad = false) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = bad ? "show bad" : "show";
  setTimeout(() => { box.className = ""; }, 4000);
}

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); throw new Error("401"); }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

async function post(url, body, isForm = false) {
  const init = { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } };
  if (isForm) init.body = body;
  else { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const r = await fetch(url, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = data.detail && data.detail.refused ? data.detail.refused.join("; ") : (typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail));
    throw new Error(detail || ("HTTP " + r.status));
  }
  return data;
}

const when = (ts) => ts ? new Date(ts * 1000).toLocaleTimeString() : "";
const day = (ts) => ts ? new Date(ts * 1000).toLocaleString() : "";
const sim = (v) => (v === null || v === undefined) ? "" : v.toFixed(3);
const identityLink = (name) => name ? el("a", { href: "/identity/" + encodeURIComponent(name), text: name, class: "name" }) : el("span", { text: "unknown", class: "muted" });
const faceImg = (url) => url ? el("img", { src: url, class: "crop", alt: "", loading: "lazy", onerror: (e) => { e.target.style.visibility = "hidden"; } }) : el("span");

// ---------------------------------------------------------------------------------------------------- live page
function cameraTile(c) {
  const img = c.preview_url ? el("img", { src: c.preview_url + "?t=" + Date.now(), class: "preview", alt: "preview of " + c.camera }) : el("div", { class: "preview none", text: "no picture" });
  const stats = c.status === "online"
    ? `${c.fps.toFixed(1)} fps · ${c.dropped} dropped · ${c.tracks} track(s) · ${c.worker || "?"}`
    : "offline";
  return el("div", { class: "tile " + c.status, "data-camera": c.camera },
    el("div", { class: "title" }, el("strong", { text: c.camera }), el("span", { class: "status", text: c.status })),
    img, el("div", { class: "stats", text: stats }));
}

function liveRow(t) {
  return el("tr", { "data-camera": t.camera, "data-track": String(t.track), "data-name": t.name || "" },
    el("td", {}, faceImg(t.crop_url)), el("td", {}, identityLink(t.name)), el("td", { text: sim(t.similarity) }),
    el("td", { text: t.camera }), el("td", { text: String(t.track) }), el("td", { text: when(t.started_ts) }),
    el("td", { text: t.time_to_name_ms === null ? "" : Math.round(t.time_to_name_ms) + " ms" }), el("td", { text: t.worker || "" }));
}

async function refreshLive() {
  try {
    const [cams, live] = await Promise.all([getJSON("/api/cameras"), getJSON("/api/live")]);
    document.getElementById("cameras").replaceChildren(...cams.cameras.map(cameraTile));
    document.querySelector("#live-tracks tbody").replaceChildren(...live.tracks.map(liveRow));
    document.getElementById("live-empty").hidden = live.tracks.length > 0;
  } catch (e) { if (e.message !== "401") toast("Live view: " + e.message, true); }
}

function livePage() {
  refreshLive();
  setInterval(refreshLive, 1000);
  // a track named a moment ago shows at once, without waiting for the next refresh
  openStream((ev) => { if (ev.type === "track_identified") refreshLive(); });
}

// ---------------------------------------------------------------------------------------------- recognitions page
function filters() {
  const form = document.getElementById("filters");
  const f = Object.fromEntries(new FormData(form).entries());
  const q = new URLSearchParams({ limit: "200" });
  if (f.camera) q.set("camera", f.camera.trim());
  if (f.identity) q.set("identity", f.identity.trim());
  if (f.min_similarity) q.set("min_similarity", f.min_similarity);
  if (f.since_min) q.set("since", String(Date.now() / 1000 - Number(f.since_min) * 60));
  return { query: q, f };
}

function matches(ev, f) {
  return (!f.camera || ev.camera === f.camera.trim()) && (!f.identity || ev.name === f.identity.trim()) &&
    (!f.min_similarity || (ev.similarity !== null && ev.similarity >= Number(f.min_similarity)));
}

function actionButtons(ev) {
  if (!isAdmin() || !ev.name) return el("span");
  const box = el("span", { class: "actions" });
  const base = `/api/tracks/${encodeURIComponent(ev.camera)}/${ev.track}`;
  if (ev.visitor && ev.visitor_exists === false) {
    // merged or expired since: nothing left to name (its page says which)
  } else if (ev.visitor) {
    const input = el("input", { placeholder: "name", class: "small", "aria-label": "name for " + ev.name });
    box.append(input, el("button", { text: "Name", class: "name-visitor", onclick: async () => {
      try { const r = await post(`/api/visitors/${encodeURIComponent(ev.name)}/name`, { name: input.value });
        toast(`${ev.name} is now ${r.name}`); loadEvents(); } catch (e) { toast(e.message, true); } } }));
  } else {
    box.append(el("button", { text: "Confirm", class: "confirm", onclick: async () => {
      try { await post(base + "/confirm", { name: ev.name }); toast(`added this face to ${ev.name}`); } catch (e) { toast(e.message, true); } } }));
  }
  box.append(el("button", { text: "Not this person", class: "reject", onclick: async () => {
    try { await post(base + "/reject", { name: ev.name }); toast(`track ${ev.track} is not ${ev.name}`); loadEvents(); } catch (e) { toast(e.message, true); } } }));
  return box;
}

// Why a track got its name: its template's similarity (the Similarity column), its lead over the next enrolled
// person or visitor (none when nobody else is close) and how many of its faces voted for the name. A lead under
// NARROW_LEAD, or a name from a single face, is marked "narrow": worth a look.
const NARROW_LEAD = 0.02;
function why(ev) {
  if (ev.type !== "track_identified" || !ev.name) return el("span");
  if (ev.visitor) return el("span", { class: "muted", text: "matched a visitor" });
  const lead = ev.margin === null || ev.margin === undefined ? "nobody else close" : `lead ${sim(ev.margin)} over the next person or visitor`;
  const faces = ev.votes ? ` · ${ev.votes} face(s) agreed` : "";
  const narrow = (ev.margin !== null && ev.margin !== undefined && ev.margin < NARROW_LEAD) || ev.votes === 1;
  return el("span", { class: narrow ? "why narrow" : "why", title: narrow ? "named by a small lead" : "" },
    narrow ? el("strong", { text: "narrow · " }) : el("span"), el("span", { text: lead + faces }));
}

function eventRow(ev) {
  return el("tr", { "data-id": String(ev.id), "data-type": ev.type, "data-name": ev.name || "" },
    el("td", {}, faceImg(ev.crop_url)), el("td", { text: when(ev.capture_ts) }), el("td", { text: ev.type.replace("track_", "") }),
    el("td", {}, identityLink(ev.name)), el("td", { text: sim(ev.similarity) }), el("td", {}, why(ev)), el("td", { text: ev.camera }),
    el("td", { text: String(ev.track) }), el("td", {}, actionButtons(ev)));
}

async function loadEvents() {
  const { query } = filters();
  try {
    const data = await getJSON("/api/events?" + query.toString());
    document.querySelector("#events tbody").replaceChildren(...data.events.map(eventRow));
  } catch (e) { if (e.message !== "401") toast("Recognitions: " + e.message, true); }
}

function recognitionsPage() {
  document.getElementById("filters").addEventListener("submit", (e) => { e.preventDefault(); loadEvents(); });
  loadEvents();
  openStream((ev) => {
    const tbody = document.querySelector("#events tbody");
    if (!matches(ev, filters().f) || tbody.querySelector(`tr[data-id="${ev.id}"]`)) return;
    tbody.prepend(eventRow(ev));
    while (tbody.rows.length > 500) tbody.deleteRow(-1);
  });
}

// ---------------------------------------------------------------------------------------------------- identity page
async function identityPage() {
  const name = document.body.dataset.name;
  let data;
  try { data = await getJSON("/api/identities/" + encodeURIComponent(name)); }
  catch (e) { document.getElementById("identity-kind").textContent = "Nothing is known of this name."; return; }
  const kind = { person: "Enrolled person", visitor: "Visitor (provisional identity)", former: "No longer enrolled",
    merged: "Merged visitor", expired: "Visitor (expired: its faces are gone)" }[data.kind];
  const kindLine = document.getElementById("identity-kind");
  kindLine.replaceChildren(kind);
  if (data.merged_into) kindLine.append(" · merged into ", identityLink(data.merged_into));
  document.getElementById("faces").replaceChildren(...data.faces.map((f) => el("figure", {}, el("img", { src: f.url, class: "crop", alt: "" }), el("figcaption", { text: f.source }))));
  const negatives = data.negatives || [];
  document.getElementById("negatives-section").hidden = negatives.length === 0;
  document.getElementById("negatives").replaceChildren(...negatives.map((f) => el("figure", { "data-face": String(f.face_id) },
    el("img", { src: f.url, class: "crop", alt: "" }), el("figcaption", { text: f.source }),
    isAdmin() ? el("button", { text: "Take back", class: "remove-negative", onclick: async () => {
      try { await post(`/api/persons/${encodeURIComponent(name)}/negatives/${f.face_id}/remove`, {});
        toast(`face ${f.face_id} is no longer evidence against ${name}`); identityPage(); } catch (e) { toast(e.message, true); } } }) : el("span"))));
  document.querySelector("#timeline tbody").replaceChildren(...data.timeline.map((s) => el("tr", {},
    el("td", {}, faceImg(s.crop_url)), el("td", { text: s.camera }), el("td", { text: String(s.track) }),
    el("td", { text: day(s.first) }), el("td", { text: when(s.last) }), el("td", { text: sim(s.similarity) }), el("td", { text: String(s.events) }))));
  if (!isAdmin()) return;
  const actions = document.getElementById("identity-actions");
  actions.replaceChildren();
  if (data.kind === "visitor") {
    const input = el("input", { placeholder: "their name", id: "visitor-new-name" });
    actions.append(input, el("button", { text: "Name this visitor", id: "name-visitor", onclick: async () => {
      try { const r = await post(`/api/visitors/${encodeURIComponent(name)}/name`, { name: input.value });
        location.href = "/identity/" + encodeURIComponent(r.name); } catch (e) { toast(e.message, true); } } }));
  } else if (data.kind === "merged") {
    if (!data.unmerge) { actions.append(el("p", { class: "muted", id: "unmerge-blocked", text: "Cannot be unmerged: " + data.unmerge_blocked })); return; }
    actions.append(el("button", { text: "Unmerge", id: "unmerge-visitor", onclick: async () => {
      if (!confirm(`Undo the merge of ${name} into ${data.merged_into}? Its faces and the events the merge renamed become ${name}'s again.`)) return;
      try { const r = await post(`/api/visitors/${encodeURIComponent(name)}/unmerge`, {});
        toast(`${r.visitor} is no longer ${r.person}: ${r.faces_restored} face(s), ${r.events} event(s) restored`);
        identityPage(); } catch (e) { toast(e.message, true); } } }));
  } else if (data.kind === "person") {
    actions.append(el("button", { text: "Remove this person", id: "remove-person", onclick: async () => {
      if (!confirm(`Remove ${name} and every enrolled face?`)) return;
      try { await post(`/api/persons/${encodeURIComponent(name)}/remove`, {}); location.href = "/people"; } catch (e) { toast(e.message, true); } } }));
  }
}

// ------------------------------------------------------------------------------------------------------ people page
async function peoplePage() {
  const data = await getJSON("/api/persons");
  document.querySelector("#persons tbody").replaceChildren(...data.persons.map((p) => el("tr", {},
    el("td", {}, identityLink(p.name)), el("td", { text: String(p.faces) }), el("td", { text: day(p.last_seen) }))));
  document.querySelector("#visitors tbody").replaceChildren(...data.visitors.map((v) => el("tr", {},
    el("td", {}, identityLink(v.visitor)), el("td", { text: String(v.faces) }), el("td", { text: day(v.last_seen) }), el("td", { text: v.not.join(", ") }))));
  const form = document.getElementById("enrol");
  if (!form) return;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = document.getElementById("enrol-result");
    out.replaceChildren(el("li", { text: "enrolling…" }));
    try {
      const r = await post("/api/persons", new FormData(form), true);
      out.replaceChildren(el("li", { text: `enrolled ${r.name}: ${r.enrolled.length} face(s)` }));
      peoplePage();
    } catch (err) { out.replaceChildren(...err.message.split("; ").map((line) => el("li", { class: "error", text: line }))); }
  }, { once: true });
}

// ------------------------------------------------------------------------------------------------------ live stream
function openStream(onEvent) {
  const source = new EventSource("/api/stream");
  source.addEventListener("track", (m) => onEvent(JSON.parse(m.data)));
  return source;
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "live") livePage();
  else if (page === "recognitions") recognitionsPage();
  else if (page === "people") peoplePage();
  else if (document.body.dataset.name !== undefined) identityPage();
});
