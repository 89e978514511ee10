// The clip-har web app: plain DOM code over the service's JSON API on this origin (no framework,
// no build step, nothing fetched from anywhere else). Text from answers is always set as text,
// never as HTML: labels can be anything a person typed.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const state = { labels: [], files: [] }; // the model's labels; the photos last predicted
const SNAPSHOT_PX = 512;

const byId = (id) => document.getElementById(id);
const apiError = (status, message) => Object.assign(new Error(message), { status });

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

const dash = (value) => (value === null || value === undefined || value === "" ? "—" : String(value));
const percent = (score) => `${(100 * score).toFixed(1)}%`;
const number = (value, digits = 3) => (typeof value === "number" ? value.toFixed(digits) : dash(value));
const when = (seconds) => (typeof seconds === "number" ? new Date(seconds * 1000).toLocaleString() : "—");

// The model's labels a golden angle apart on the colour wheel (neighbours differ); other labels by hash.
function colour(label) {
  let index = state.labels.indexOf(label);
  if (index < 0) for (const ch of label) index = Math.abs(index * 31 + ch.codePointAt(0)) % 997;
  return `hsl(${Math.round(index * 137.5) % 360} 55% 48%)`;
}

function showError(message) {
  const box = $("#error");
  box.textContent = message || "";
  box.hidden = !message;
}

// Every endpoint answers errors as {"error": "<reason>"} (clip_har/serving/errors.py); an object
// with a `message` is read too, so a richer error shape keeps working.
async function api(path, form) {
  let response;
  try {
    response = await fetch(path, form ? { method: "POST", body: form } : {});
  } catch (exc) {
    throw apiError(0, `${path}: the service cannot be reached (${exc.message})`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body && body.error;
    const reason = typeof error === "string" ? error : error && error.message;
    throw apiError(response.status, `${path}: ${reason || `${response.status} ${response.statusText}`}`);
  }
  if (body === null) throw apiError(response.status, `${path}: the answer is not JSON`);
  return body;
}

// One user action: its button disabled meanwhile; any failure shown in the error area (and in
// `status`, the line beside the control, when there is one).
async function act(button, action, status) {
  if (button) button.disabled = true;
  if (status) status.textContent = "";
  showError("");
  try {
    await action();
  } catch (exc) {
    showError(exc.message);
    if (status) status.textContent = exc.message;
  } finally {
    if (button) button.disabled = false;
  }
}

// A horizontal bar per label, highest first; each bar carries its label and score as data-*.
function bars(container, entries) {
  const sorted = [...entries].sort((a, b) => b.score - a.score);
  container.setAttribute("role", "list");
  container.replaceChildren(
    ...sorted.map(({ label, score }) => {
      const fill = el("span", { class: "bar-fill" });
      fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
      fill.style.background = colour(label);
      return el(
        "div",
        { class: "bar", role: "listitem", "data-label": label, "data-score": String(score) },
        el("span", { class: "bar-label", title: label }, label),
        el("span", { class: "bar-track" }, fill),
        el("span", { class: "bar-value" }, percent(score)),
      );
    }),
  );
}

function fillSelect(select, labels, first) {
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, first), ...labels.map((l) => el("option", { value: l }, l)));
  if (labels.includes(keep)) select.value = keep;
}

function fillLabelSelects() {
  for (const select of document.querySelectorAll(".explain-label"))
    fillSelect(select, state.labels, "(the predicted one)");
  for (const select of document.querySelectorAll(".feedback-label")) fillSelect(select, state.labels, "choose…");
}

// --- photos: /predict, then /explain and /feedback per photo ----------------------------------

async function predict(files) {
  const form = new FormData();
  for (const file of files) form.append("images", file, file.name);
  form.append("top_k", $("#top-k").value || "5");
  const answer = await api("/predict", form);
  state.files = files;
  $("#header-version").textContent = answer.model_version;
  for (const img of document.querySelectorAll("#results .thumb")) URL.revokeObjectURL(img.src); // the old photos
  $("#results").replaceChildren(...answer.results.map((r, i) => resultCard(r, files[i], answer.model_version)));
  // without a card (it failed to load), the labels this answer names
  if (!state.labels.length) state.labels = answer.results[0].top_k.map((t) => t.label).sort();
  fillLabelSelects();
}

function resultCard(result, file, version) {
  const card = $("#result-template").content.firstElementChild.cloneNode(true);
  card.dataset.filename = result.filename;
  card.dataset.label = result.label;
  const thumb = $(".thumb", card);
  thumb.src = URL.createObjectURL(file);
  thumb.alt = `uploaded photo ${result.filename}`;
  $(".top", card).textContent = `${result.label} · ${percent(result.score)}`;
  bars($(".chart", card), result.top_k);

  const explainButton = $(".explain-btn", card);
  const explainStatus = $(".explain-status", card);
  explainButton.addEventListener("click", () => act(explainButton, () => explain(card, file), explainStatus));
  const sendButton = $(".feedback-btn", card);
  const feedbackStatus = $(".feedback-status", card);
  sendButton.addEventListener("click", () =>
    act(sendButton, () => feedback(card, file, result.label, version), feedbackStatus),
  );
  return card;
}

async function explain(card, file) {
  const form = new FormData();
  form.append("image", file, file.name);
  const label = $(".explain-label", card).value;
  if (label) form.append("label", label);
  const answer = await api("/explain", form);
  const overlay = $(".overlay", card);
  overlay.src = `data:image/png;base64,${answer.overlay_png}`;
  overlay.alt = `where the model looks for ${answer.label}`;
  $(".overlay-caption", card).textContent = `where it looks for ${answer.label}`;
  overlay.parentElement.hidden = false;
  $(".explain-status", card).textContent =
    `Heat map for ${answer.label} (${percent(answer.score)}; predicted ${answer.predicted}; ${answer.method})`;
}

async function feedback(card, file, predicted, version) {
  const label = $(".feedback-label", card).value;
  if (!label) throw new Error("Choose the right label first.");
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("label", label);
  form.append("predicted", predicted);
  form.append("model_version", version);
  const answer = await api("/feedback", form);
  $(".feedback-status", card).textContent = `Thanks — queued for review as ${answer.label}`;
}

async function classify(event) {
  event.preventDefault();
  const button = $("#classify-btn");
  await act(button, async () => {
    if (!state.files.length) throw new Error("Choose a photo (or take a snapshot) first.");
    const labels = $("#labels").value;
    if (!labels.trim()) throw new Error("Type at least one label.");
    const form = new FormData();
    for (const file of state.files) form.append("images", file, file.name);
    form.append("labels", labels);
    const answer = await api("/classify", form);
    $("#classify-results").replaceChildren(
      ...answer.results.map((r) => {
        const chart = el("div", { class: "chart", "data-testid": "classify-chart" });
        bars(
          chart,
          Object.entries(r.scores).map(([label, score]) => ({ label, score })),
        );
        return el("div", { class: "classify-item", "data-filename": r.filename }, el("h3", {}, r.filename), chart);
      }),
    );
  });
}

// --- the camera: a snapshot is one more photo ----------------------------------------------------

function setupCamera() {
  const ids = ["camera-btn", "snapshot-btn", "camera-stop", "camera-preview", "camera-msg"];
  const [start, snap, stop, preview, message] = ids.map(byId);
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    start.disabled = true;
    message.textContent = window.isSecureContext
      ? "This browser gives the page no camera."
      : "The camera needs a secure page: open it on https or on localhost.";
    return;
  }
  let stream = null;
  const showLive = (live) => {
    preview.hidden = snap.hidden = stop.hidden = !live;
    start.hidden = live;
  };
  start.addEventListener("click", async () => {
    message.textContent = "";
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    } catch (exc) {
      const reasons = { NotFoundError: "No camera was found.", NotAllowedError: "Camera access was refused." };
      message.textContent = reasons[exc.name] || `The camera cannot be used: ${exc.message}`;
      return;
    }
    preview.srcObject = stream;
    showLive(true);
  });
  stop.addEventListener("click", () => {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    preview.srcObject = stream = null;
    showLive(false);
  });
  snap.addEventListener("click", () =>
    act(snap, async () => {
      // at most SNAPSHOT_PX a side: the model sees far fewer, and the service caps the pixels
      const scale = Math.min(1, SNAPSHOT_PX / Math.max(preview.videoWidth, preview.videoHeight, 1));
      const canvas = el("canvas");
      canvas.width = Math.round(preview.videoWidth * scale);
      canvas.height = Math.round(preview.videoHeight * scale);
      canvas.getContext("2d").drawImage(preview, 0, 0, canvas.width, canvas.height);
      const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
      if (!blob) throw new Error("The camera gave no picture yet; try again.");
      await predict([new File([blob], `snapshot-${Date.now()}.jpg`, { type: "image/jpeg" })]);
    }),
  );
}

// --- video: /predict_video ------------------------------------------------------------------------

async function predictVideo(file) {
  const form = new FormData();
  form.append("video", file, file.name);
  form.append("fps", $("#fps").value || "1");
  const answer = await api("/predict_video", form);
  $("#header-version").textContent = answer.model_version;
  const timeline = $("#timeline");
  timeline.replaceChildren(
    ...answer.segments.map((s) => {
      const block = el(
        "div",
        {
          class: "segment",
          "data-label": s.label,
          title: `${s.label}: ${s.start_s}–${s.end_s} s (${percent(s.score)})`,
        },
        el("span", {}, s.label),
      );
      block.style.flexGrow = String(Math.max(s.end_s - s.start_s, 0.01));
      block.style.background = colour(s.label);
      return block;
    }),
  );
  if (!answer.segments.length) timeline.textContent = "No frames could be read from this video.";
  const ends = answer.segments.length ? [answer.segments[0].start_s, answer.segments.at(-1).end_s] : [];
  $("#timeline-axis").replaceChildren(...ends.map((t) => el("span", {}, `${t.toFixed(1)} s`)));
  $("#frames").replaceChildren(
    ...answer.frames.map((f) =>
      el("li", { "data-label": f.label }, `${f.t.toFixed(1)} s: ${f.label} (${percent(f.score)})`),
    ),
  );
}

// --- the model card: /model/card, or /model on a service without it --------------------------------

async function loadCard() {
  let card;
  try {
    card = await api("/model/card");
  } catch (exc) {
    if (exc.status !== 404 && exc.status !== 405) throw exc;
    card = await api("/model");
  }
  renderCard(card);
}

function table(head, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))),
    el(
      "tbody",
      {},
      ...rows.map((row) => el("tr", {}, ...row.map((cell, i) => el(i ? "td" : "th", i ? {} : { scope: "row" }, cell)))),
    ),
  );
}

function renderCard(card) {
  const set = (id, value) => ($(id).textContent = dash(value));
  set("#card-version", card.model_version);
  set("#header-version", card.model_version);
  set("#card-backend", card.backend);
  set("#card-registry", card.registry_version);
  set("#card-data", card.data_version ?? (card.lineage || {}).data_version);
  state.labels = card.labels || [];
  set("#card-labels", state.labels.length ? `${state.labels.length}: ${state.labels.join(", ")}` : null);
  fillLabelSelects();

  const lineage = Object.entries(card.lineage || {}).map(([k, v]) => [k, dash(v)]);
  lineage.sort(([a], [b]) => a.localeCompare(b));
  $("#card-lineage").replaceChildren(lineage.length ? table(["key", "value"], lineage) : "—");

  const m = card.metrics;
  $("#card-metrics").replaceChildren(
    ...(m
      ? [
          table(
            ["split", "n", "accuracy", "macro-F1", "ECE"],
            [[dash(m.split), dash(m.n), number(m.accuracy), number(m.macro_f1), number(m.ece)]],
          ),
          perClass(m.per_class),
        ]
      : ["—"]),
  );
  $("#card-confusion").replaceChildren(card.confusion ? confusion(card.confusion) : "—");
  $("#card-drift").replaceChildren(card.drift ? drift(card.drift) : "—");
  const shadow = card.shadow || {};
  const agreement = typeof shadow.agreement === "number" ? percent(shadow.agreement) : "—";
  $("#card-shadow").textContent = shadow.challenger
    ? `${shadow.challenger}: ${dash(shadow.requests)} requests, agreement ${agreement}`
    : "—";
  const links = card.links || {};
  for (const key of ["prefect", "mlflow", "mlflow_run"]) {
    const link = byId(`link-${key}`);
    link.hidden = !links[key];
    if (links[key]) link.href = links[key];
  }
}

function perClass(perClassMetrics) {
  const rows = Object.entries(perClassMetrics || {}).map(([label, c]) => [
    label,
    number(c.precision, 2),
    number(c.recall, 2),
    number(c.f1, 2),
    dash(c.support),
  ]);
  if (!rows.length) return null;
  return el(
    "details",
    {},
    el("summary", {}, "per class"),
    table(["label", "precision", "recall", "F1", "support"], rows),
  );
}

// Rows are true labels, columns predicted ones; a cell's heat is its share of its row.
function confusion({ labels, matrix }) {
  const head = el(
    "tr",
    {},
    el("th", { scope: "col" }, "true ↓ predicted →"),
    ...labels.map((l) => el("th", { scope: "col", title: l }, l)),
  );
  const rows = matrix.map((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return el(
      "tr",
      {},
      el("th", { scope: "row" }, labels[i]),
      ...row.map((count) => {
        const share = count / total;
        const cell = el("td", { title: `${labels[i]} → ${percent(share)}` }, count ? String(count) : "");
        cell.style.background = `hsl(215 80% ${Math.round(97 - 55 * share)}%)`;
        cell.style.color = share > 0.55 ? "#fff" : "inherit";
        return cell;
      }),
    );
  });
  return el("table", { class: "confusion" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

// The latest drift check: its verdict and window, then each signal's score against its threshold.
function drift(d) {
  const { status, since, until, report_url: url, scores, thresholds = {}, drifted = {}, ...rest } = d;
  const link = url
    ? el("a", { href: url, target: "_blank", rel: "noopener", "data-testid": "drift-report" }, "Evidently report")
    : null;
  const signals = Object.entries(scores || {}).map(([k, v]) => [
    k,
    number(v),
    number(thresholds[k]),
    drifted[k] ? "yes" : "no",
  ]);
  const counts = Object.entries(rest)
    .map(([k, v]) => `${k.replace(/_/g, " ")} ${dash(v)}`)
    .join(", ");
  return el(
    "div",
    {},
    el("span", { class: `verdict ${dash(status)}`, "data-testid": "drift-status" }, dash(status).replace(/_/g, " ")),
    " ",
    link,
    el("p", { class: "muted" }, `window ${when(since)} – ${when(until)}${counts ? `; ${counts}` : ""}`),
    signals.length ? table(["signal", "score", "threshold", "drifted"], signals) : null,
  );
}

// --- wiring ------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const photos = $("#photos");
  photos.addEventListener("change", () => {
    if (photos.files.length) act(null, () => predict([...photos.files]));
  });
  const video = $("#video");
  video.addEventListener("change", () => {
    if (video.files.length) act(null, () => predictVideo(video.files[0]));
  });
  $("#classify-form").addEventListener("submit", classify);
  setupCamera();
  act(null, loadCard);
});
