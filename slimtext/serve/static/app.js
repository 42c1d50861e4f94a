// The page for `slimtext serve`: one request to /v1/classify with top_k = all labels, drawn as
// bars. Plain DOM, no libraries: the server may be offline, and the CSP allows only 'self'.
"use strict";

const $ = (id) => document.getElementById(id);
let labelCount = null;

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

// Any non-2xx answer -> one readable line; the API always sends {"error": {type, message}}.
async function apiError(resp) {
  let text = resp.status + " " + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error) text = body.error.message + " (" + body.error.type + ", " + resp.status + ")";
  } catch (_) { /* not JSON: keep the status line */ }
  if (resp.status === 401) $("key-row").hidden = false;
  return text;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function loadModelInfo() {
  try {
    const resp = await fetch("/v1/model", { headers: authHeaders() });
    if (!resp.ok) {
      $("model-info").textContent = "model info: " + (await apiError(resp));
      return;
    }
    const info = await resp.json();
    labelCount = info.labels.length;
    $("model-info").textContent = "model " + info.name + " · " + labelCount + " labels · " +
      info.backend + " · slimtext " + info.slimtext_version;
  } catch (e) {
    $("model-info").textContent = "server unreachable: " + e.message;
  }
}

function render(result) {
  $("label").textContent = result.label;
  $("score").textContent = (100 * result.score).toFixed(1) + "%";
  const bars = $("bars");
  bars.replaceChildren();
  for (const { label, score } of result.top_k) {
    const li = document.createElement("li");
    li.className = label === result.label ? "best" : "";
    li.dataset.label = label;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    name.title = label;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * score).toFixed(1) + "%";
    track.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = (100 * score).toFixed(1) + "%";
    li.append(name, track, pct);
    bars.appendChild(li);
  }
  $("result").hidden = false;
}

async function classify() {
  const text = $("text").value;
  $("error").hidden = true;
  if (!text.trim()) {
    showError("Type some text first.");
    return;
  }
  if (labelCount === null) await loadModelInfo();
  const button = $("classify");
  button.disabled = true;
  $("status").textContent = "classifying…";
  const t0 = performance.now();
  try {
    const body = { texts: [text] };
    if (labelCount) body.top_k = labelCount;
    const resp = await fetch("/v1/classify", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
    });
    if (!resp.ok) {
      $("result").hidden = true;
      showError(await apiError(resp));
      $("status").textContent = "";
      return;
    }
    const data = await resp.json();
    render(data.results[0]);
    $("status").textContent = Math.round(performance.now() - t0) + " ms";
  } catch (e) {
    showError("Request failed: " + e.message);
    $("status").textContent = "";
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("classify").addEventListener("click", classify);
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      classify();
    }
  });
  $("api-key").addEventListener("change", loadModelInfo);
  loadModelInfo();
});
