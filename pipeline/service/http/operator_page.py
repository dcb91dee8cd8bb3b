"""The operator's part of the preview page: the recent door decisions, each with a "wrong
person" button (``POST /v1/decisions/{event_id}/feedback``), and the unknown face clusters
with "enrol as..." and "forget" (``/v1/unknowns``).

Reading (the decisions, the clusters, their thumbnails) goes with the preview cookie, as the
rest of the page. Changing the gallery does not: the cookie opens only what can be looked at
(``pipeline.service.http.auth``), so a cookie that leaks, or a forged cross-site request,
cannot correct a decision or enrol anyone. The operator types the API token into the page's
own field; the script sends it as ``Authorization: Bearer`` with each change and keeps it
nowhere else (no storage, no cookie, no URL). Putting the token into the served HTML instead
would hand it to whoever holds a cookie, or a cached copy of the page.

Every text from the API is set with ``textContent`` (a name is never markup), and a cluster's
thumbnail is shown only from a same-origin path (the page loads nothing from other sites).
"""

from __future__ import annotations

__all__ = ["OPERATOR_SECTION"]

OPERATOR_SECTION = """
<section id="operator" aria-labelledby="operator-title">
<h2 id="operator-title">Operator</h2>
<p>Corrections and enrolments change the gallery, so they need the API token itself (signing
in only opens what can be looked at). It stays in this page and is sent with each change.</p>
<label>API token for changes
  <input id="operator-token" type="password" autocomplete="off" size="40"></label>

<section id="decisions" aria-labelledby="decisions-title">
<h3 id="decisions-title">Recent decisions</h3>
<button id="decisions-refresh" type="button">Refresh decisions</button>
<p id="decisions-state"></p>
<ul id="decision-list" class="rows"></ul>
</section>

<section id="unknowns" aria-labelledby="unknowns-title">
<h3 id="unknowns-title">Unknown faces</h3>
<button id="unknowns-refresh" type="button">Refresh unknown faces</button>
<p id="unknowns-state"></p>
<ul id="cluster-list" class="rows"></ul>
</section>
</section>
<style>
#operator { border-top: 1px solid #444; margin-top: 1em }
.rows { list-style: none; padding: 0 }
.rows li { margin: 0 0 0.6em 0 }
.rows img { height: 64px; vertical-align: middle; margin-right: 0.5em }
.problem { color: #f88 }
.done { color: #8c8 }
</style>
<script>
"use strict";
const DECISIONS_SHOWN = 20;
// feedback events are looked up among the newest ones; one older than these still gets its
// 409 ("already had its feedback") when clicked, shown on the row
const FEEDBACK_EVENTS_READ = 200;

function operatorToken() {
  return document.getElementById("operator-token").value.trim();
}
function problemText(body, reply) {
  // the API answers {"detail": "..."}; a request FastAPI refused lists its problems
  if (body && typeof body.detail === "string") { return body.detail; }
  if (body && Array.isArray(body.detail)) {
    return body.detail.map(item => item.loc.join(".") + ": " + item.msg).join("; ");
  }
  return "HTTP " + reply.status;
}
async function change(method, path, body) {
  // a change the API took: {ok: true, body}; refused: {ok: false, status, text}
  const token = operatorToken();
  if (token === "") {
    return {ok: false, status: 0, text: "type the API token into the field above first"};
  }
  const request = {method, credentials: "omit", headers: {"Authorization": "Bearer " + token}};
  if (body !== undefined) {
    request.headers["Content-Type"] = "application/json";
    request.body = JSON.stringify(body);
  }
  const reply = await fetch(path, request);
  const text = await reply.text();
  const parsed = text === "" ? null : JSON.parse(text);
  if (reply.ok) { return {ok: true, body: parsed}; }
  return {ok: false, status: reply.status, text: problemText(parsed, reply)};
}
function when(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
function note(className, text) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

// ---- decisions ----

function feedbackText(feedback) {
  if (!feedback.correct) {
    const template = feedback.quarantined_template;
    return "corrected: wrong person" + (template ? " (template " + template + " quarantined)" : "");
  }
  return "confirmed: right person";
}
async function wrongPerson(row, decision) {
  const button = row.querySelector("button.wrong");
  button.disabled = true;
  const path = "/v1/decisions/" + encodeURIComponent(decision.event_id) + "/feedback";
  let answer;
  try {
    answer = await change("POST", path, {correct: false});
  } catch (error) {
    answer = {ok: false, status: 0, text: String(error)};
  }
  if (answer.ok) {
    const result = answer.body;
    const tau = result.tau.toFixed(3);
    button.replaceWith(note("feedback done", feedbackText(result) + "; tau of " +
      result.identity.name + " now " + tau));
  } else if (answer.status === 409) {  // answered already (another operator, another tab)
    button.replaceWith(note("feedback problem", answer.text));
  } else {
    button.disabled = false;
    row.querySelector(".row-problem").textContent = answer.text;
  }
}
function decisionRow(decision, feedback) {
  const payload = decision.payload;
  const row = document.createElement("li");
  row.className = "decision";
  row.id = "decision-" + decision.event_id;
  const who = payload.name === null ? "nobody" : payload.name + " (" + payload.identity_id + ")";
  const distance = payload.distance === null ? "" : ", distance " + payload.distance.toFixed(3);
  row.append(note("what", when(decision.created) + " door " + payload.door_id + ", camera " +
    payload.camera_id + ": " + payload.outcome + " " + who + distance + " "));
  if (feedback !== undefined) {
    row.append(note("feedback", feedbackText(feedback)));
  } else if (payload.identity_id !== null && payload.template_id) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "wrong";
    button.textContent = "wrong person";
    button.addEventListener("click", () => wrongPerson(row, decision));
    row.append(button);
  }
  row.append(" ", note("row-problem problem", ""));
  return row;
}
async function refreshDecisions() {
  const state = document.getElementById("decisions-state");
  try {
    const decisions = (await getJson("/v1/events?kind=decision&count=" + DECISIONS_SHOWN)).events;
    const answers = (await getJson(
      "/v1/events?kind=decision_feedback&count=" + FEEDBACK_EVENTS_READ)).events;
    const feedbackOf = new Map(answers.map(event =>
      [event.payload.decision_event_id, event.payload]));
    document.getElementById("decision-list").replaceChildren(...decisions.map(
      decision => decisionRow(decision, feedbackOf.get(decision.event_id))));
    state.textContent = decisions.length === 0 ? "No door decision yet." : "";
  } catch (error) {
    state.textContent = "Cannot read the decisions: " + error.message;
  }
}

// ---- unknown faces ----

function sameOrigin(url) {
  return typeof url === "string" && url.startsWith("/") && !url.startsWith("//");
}
async function enrolCluster(row, cluster) {
  const name = row.querySelector("input.enrol-name").value.trim();
  const problem = row.querySelector(".row-problem");
  if (name === "") { problem.textContent = "type the person's name first"; return; }
  const galleries = row.querySelector("input.enrol-galleries").value
    .split(",").map(part => part.trim()).filter(part => part !== "");
  const body = galleries.length === 0 ? {name} : {name, galleries};
  const path = "/v1/unknowns/" + encodeURIComponent(cluster.cluster_id) + "/enroll";
  const answer = await change("POST", path, body).catch(
    error => ({ok: false, status: 0, text: String(error)}));
  if (answer.ok) {
    row.replaceChildren(note("done", "enrolled as " + answer.body.name + " (" +
      answer.body.id + ")"));
  } else {
    problem.textContent = answer.text;
  }
}
async function forgetCluster(row, cluster) {
  const path = "/v1/unknowns/" + encodeURIComponent(cluster.cluster_id);
  const answer = await change("DELETE", path).catch(
    error => ({ok: false, status: 0, text: String(error)}));
  if (answer.ok) {
    row.replaceChildren(note("done", "forgotten: " + cluster.cluster_id));
  } else {
    row.querySelector(".row-problem").textContent = answer.text;
  }
}
function clusterRow(cluster) {
  const row = document.createElement("li");
  row.className = "cluster";
  row.id = "cluster-" + cluster.cluster_id;
  if (sameOrigin(cluster.thumbnail_url)) {
    const image = document.createElement("img");
    image.src = cluster.thumbnail_url;
    image.alt = "face of unknown person " + cluster.cluster_id;
    row.append(image);
  }
  row.append(note("what", cluster.count + " sightings, first seen " + when(cluster.first_seen) +
    ", last seen " + when(cluster.last_seen) + ", cameras: " + cluster.cameras.join(", ") + " "));
  const label = document.createElement("label");
  label.textContent = "name ";
  const name = document.createElement("input");
  name.className = "enrol-name";
  label.append(name);
  const galleriesLabel = document.createElement("label");
  galleriesLabel.textContent = " galleries (comma separated, optional) ";
  const galleries = document.createElement("input");
  galleries.className = "enrol-galleries";
  galleries.size = 12;
  galleriesLabel.append(galleries);
  const enrol = document.createElement("button");
  enrol.type = "button";
  enrol.className = "enrol";
  enrol.textContent = "enrol as\u2026";
  enrol.addEventListener("click", () => enrolCluster(row, cluster));
  const forget = document.createElement("button");
  forget.type = "button";
  forget.className = "forget";
  forget.textContent = "forget";
  forget.addEventListener("click", () => forgetCluster(row, cluster));
  row.append(label, galleriesLabel, " ", enrol, " ", forget, " ", note("row-problem problem", ""));
  return row;
}
async function refreshUnknowns() {
  const state = document.getElementById("unknowns-state");
  const list = document.getElementById("cluster-list");
  let reply;
  try {
    reply = await fetch("/v1/unknowns", {credentials: "same-origin"});
  } catch (error) {
    state.textContent = "Cannot read the unknown faces: " + error.message;
    return;
  }
  const text = await reply.text();
  const body = text === "" ? null : JSON.parse(text);
  if (reply.status === 404) {  // the feature is off (or this service predates it)
    list.replaceChildren();
    state.textContent = "Unknown faces are off: set enabled = true in the [unknowns] section " +
      "of the config and restart the service. (" + problemText(body, reply) + ")";
    return;
  }
  if (!reply.ok) {
    state.textContent = "Cannot read the unknown faces: " + problemText(body, reply);
    return;
  }
  list.replaceChildren(...body.clusters.map(clusterRow));
  state.textContent = body.clusters.length === 0 ? "No unknown face grouped yet." : "";
}

// the lists change only when asked (and on load): a row never moves under the operator's
// pointer while they aim at its button
document.getElementById("decisions-refresh").addEventListener("click", refreshDecisions);
document.getElementById("unknowns-refresh").addEventListener("click", refreshUnknowns);
refreshDecisions();
refreshUnknowns();
</script>
"""
