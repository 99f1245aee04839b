// The drawing page: strokes on a canvas, sent as a PNG to /v1/digit or /v1/number while you draw (one request
// in flight at a time; the newest drawing is sent when it returns), and the answer drawn as bars and 28×28 images.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const answer = document.getElementById("answer");
const confidence = document.getElementById("confidence");
const statusLine = document.getElementById("status");
const bars = document.getElementById("bars");
const seen = document.getElementById("seen");

let mode = document.querySelector('input[name="mode"]:checked').value;  // a reload may keep the last choice
let inked = false;      // anything drawn since the last clear
let dirty = false;      // drawn since the last request was sent
let inFlight = false;
let last = null;        // the previous point of the stroke being drawn
let drawing = 0;        // which drawing is on the pad: an answer about an earlier one is not shown

function resetPad() {
  pad.width = mode === "number" ? 560 : 280;
  pad.classList.toggle("wide", mode === "number");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#000";
  ctx.fillStyle = "#000";
  ctx.lineWidth = 20;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  inked = false;
  dirty = false;
  drawing += 1;
  showNothing();
}

function showNothing() {
  answer.textContent = "";
  confidence.textContent = "";
  statusLine.textContent = "";
  statusLine.classList.remove("error");
  seen.replaceChildren();
  drawBars(null);
}

function point(event) {
  const r = pad.getBoundingClientRect();
  return { x: (event.clientX - r.left) * (pad.width / r.width), y: (event.clientY - r.top) * (pad.height / r.height) };
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  pad.focus({ preventScroll: true });
  last = point(event);
  ctx.beginPath();
  ctx.arc(last.x, last.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
  ctx.fill();
  changed();
});

pad.addEventListener("pointermove", (event) => {
  if (last === null) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const p = point(e);
    ctx.beginPath();
    ctx.moveTo(last.x, last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    last = p;
  }
  changed();
});

for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (last === null) return;  // a press that began outside the pad drew nothing
    last = null;
    changed();
  });
}

pad.addEventListener("keydown", (event) => {
  if (event.key === "Escape" || event.key === "Delete" || event.key === "Backspace") {
    event.preventDefault();
    resetPad();
  }
});

document.getElementById("clear").addEventListener("click", () => { resetPad(); pad.focus(); });

for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener("change", () => { mode = radio.value; resetPad(); });
}

document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) read(file, drawing);
});

function changed() {
  inked = true;
  dirty = true;
  sendDrawing();
}

function sendDrawing() {
  if (inFlight || !dirty || !inked) return;
  dirty = false;
  inFlight = true;
  const about = drawing;  // toBlob answers later: the pad may have been cleared by then
  pad.toBlob((blob) => read(blob, about), "image/png");
}

// Read `blob` (made from drawing number `about`) and show the answer, unless the pad has moved on meanwhile.
async function read(blob, about) {
  inFlight = true;
  const endpoint = mode === "number" ? "/v1/number" : "/v1/digit";
  try {
    const response = await fetch(`${endpoint}?pixels=true`, {
      method: "POST", headers: { "Content-Type": blob.type || "application/octet-stream" }, body: blob,
    });
    const body = await response.json();
    if (about !== drawing) return;  // the pad was cleared (or the mode changed) meanwhile
    if (!response.ok) showError(body.error || `the server answered ${response.status}`);
    else if (mode === "number") showNumber(body);
    else showDigit(body);
  } catch (error) {
    showError(`the server cannot be reached (${error.message}) — is mnistctl serve still running?`);
  } finally {
    inFlight = false;
    sendDrawing();  // what was drawn while this request was out
  }
}

function showError(message) {
  answer.textContent = "";
  confidence.textContent = "";
  seen.replaceChildren();
  drawBars(null);
  statusLine.textContent = message;
  statusLine.classList.add("error");
}

function showDigit(r) {
  statusLine.textContent = "";
  statusLine.classList.remove("error");
  answer.textContent = String(r.digit);
  confidence.textContent = `${(r.confidence * 100).toFixed(1)} % sure`;
  drawBars(r.probabilities);
  seen.replaceChildren(figure(r.pixels, "the network's input"));
}

function showNumber(r) {
  statusLine.textContent = "";
  statusLine.classList.remove("error");
  answer.textContent = r.number;
  confidence.textContent = `the least sure digit: ${(r.confidence * 100).toFixed(1)} %`;
  drawBars(r.digits.length === 1 ? r.digits[0].probabilities : null);
  seen.replaceChildren(...r.digits.map((d) => figure(d.pixels, `${d.digit} (${(d.confidence * 100).toFixed(0)} %)`)));
}

function drawBars(probabilities) {
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  bars.replaceChildren(...Array.from({ length: 10 }, (_, digit) => {
    const p = probabilities ? probabilities[digit] : 0;
    const row = document.createElement("li");
    row.className = digit === top ? "top" : "";
    row.setAttribute("aria-label", `${digit}: ${(p * 100).toFixed(1)} percent`);
    row.innerHTML = `<span aria-hidden="true">${digit}</span><span class="track" aria-hidden="true"><span class="fill"></span></span>` +
      `<span class="pct" aria-hidden="true">${probabilities ? (p * 100).toFixed(1) + " %" : ""}</span>`;
    row.querySelector(".fill").style.width = `${(p * 100).toFixed(1)}%`;
    return row;
  }));
}

function figure(pixels, caption) {
  const fig = document.createElement("figure");
  const c = document.createElement("canvas");
  c.width = 28;
  c.height = 28;
  c.setAttribute("role", "img");
  c.setAttribute("aria-label", `28 by 28 input: ${caption}`);
  const image = c.getContext("2d").createImageData(28, 28);
  pixels.flat().forEach((v, i) => { image.data.set([v, v, v, 255], 4 * i); });
  c.getContext("2d").putImageData(image, 0, 0);
  const text = document.createElement("figcaption");
  text.textContent = caption;
  fig.append(c, text);
  return fig;
}

resetPad();
