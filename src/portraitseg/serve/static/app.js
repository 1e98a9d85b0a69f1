// The portraitseg web page: upload a photo, render it with the chosen options, show and download it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { file: null, focus: null, photoUrl: null, portraitUrl: null, request: null, timer: null };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function loadOptions() {
  const response = await fetch("/api/options");
  const options = await response.json();
  for (const name of options.presets) {
    const item = new Option(name, name, name === options.preset, name === options.preset);
    $("preset").append(item);
  }
  $("strength").value = options.strengths[options.preset] ?? 0.012;
  $("strength").dataset.strengths = JSON.stringify(options.strengths);
  showStrength();
  options.classes.forEach((name, id) => {
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = String(id);
    box.checked = options.keep.includes(id);
    box.addEventListener("change", schedule);
    label.append(box, " " + name);
    $("keep").append(label);
  });
}

function showStrength() {
  $("strength-value").textContent = Number($("strength").value).toFixed(3);
}

function formData() {
  const data = new FormData();
  data.append("image", state.file);
  data.append("preset", $("preset").value);
  data.append("strength", $("strength").value);
  const kept = [...$("keep").querySelectorAll("input:checked")].map((box) => box.value);
  if (kept.length) data.append("keep", kept.join(","));
  if ($("all-people").checked) data.append("all_people", "1");
  if (state.focus) data.append("focus", `${state.focus[0]},${state.focus[1]}`);
  data.append("format", "jpeg");
  return data;
}

async function render() {
  if (!state.file) return;
  if (!$("keep").querySelector("input:checked")) {
    setStatus("Choose at least one class to keep sharp.", true);
    return;
  }
  if (state.request) state.request.abort();
  const request = new AbortController();
  state.request = request;
  $("portrait").dataset.state = "working";
  setStatus("Rendering...");
  const start = performance.now();
  try {
    const response = await fetch("/api/portrait", { method: "POST", body: formData(), signal: request.signal });
    if (!response.ok) {
      const body = await response.json().catch(() => ({ error: response.statusText }));
      throw new Error(`${response.status}: ${body.error}`);
    }
    const blob = await response.blob();
    if (state.portraitUrl) URL.revokeObjectURL(state.portraitUrl);
    state.portraitUrl = URL.createObjectURL(blob);
    await new Promise((resolve, reject) => {
      $("portrait").onload = resolve;
      $("portrait").onerror = () => reject(new Error("the portrait could not be shown"));
      $("portrait").src = state.portraitUrl;
    });
    $("download").href = state.portraitUrl;
    $("download").hidden = false;
    $("portrait").dataset.state = "done";
    const notes = decodeURIComponent(response.headers.get("X-Portrait-Notes") || "");
    const seconds = ((performance.now() - start) / 1000).toFixed(1);
    setStatus(`Rendered in ${seconds} s.` + (notes ? ` Note: ${notes}` : ""));
  } catch (err) {
    if (err.name === "AbortError") return;
    $("portrait").dataset.state = "error";
    setStatus(`The portrait could not be made: ${err.message}`, true);
  }
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(render, 250);
}

function choose(file) {
  if (!file) return;
  state.file = file;
  state.focus = null;
  $("marker").hidden = true;
  $("clear-focus").disabled = true;
  const stem = file.name.replace(/\.[^.]*$/, "") || "photo";
  $("download").download = `${stem}_portrait.jpg`;
  if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
  state.photoUrl = URL.createObjectURL(file);
  $("photo").src = state.photoUrl;
  render();
}

function pickFocus(event) {
  const photo = $("photo");
  if (!state.file || !photo.naturalWidth) return;
  const box = photo.getBoundingClientRect();
  const x = Math.round(((event.clientX - box.left) / box.width) * photo.naturalWidth);
  const y = Math.round(((event.clientY - box.top) / box.height) * photo.naturalHeight);
  state.focus = [Math.min(Math.max(x, 0), photo.naturalWidth - 1), Math.min(Math.max(y, 0), photo.naturalHeight - 1)];
  $("marker").style.left = `${event.clientX - box.left}px`;
  $("marker").style.top = `${event.clientY - box.top}px`;
  $("marker").hidden = false;
  $("clear-focus").disabled = false;
  render();
}

function setUp() {
  $("file").addEventListener("change", () => choose($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    choose(event.dataTransfer.files[0]);
  });
  $("preset").addEventListener("change", () => {
    const strengths = JSON.parse($("strength").dataset.strengths);
    $("strength").value = strengths[$("preset").value] ?? $("strength").value;
    showStrength();
    schedule();
  });
  $("strength").addEventListener("input", () => { showStrength(); schedule(); });
  $("all-people").addEventListener("change", schedule);
  $("photo").addEventListener("click", pickFocus);
  $("clear-focus").addEventListener("click", () => {
    state.focus = null;
    $("marker").hidden = true;
    $("clear-focus").disabled = true;
    render();
  });
  loadOptions().catch((err) => setStatus(`The server did not answer: ${err.message}`, true));
}

setUp();
