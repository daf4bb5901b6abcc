// The page's view: status line, event log, current turn and the latency waterfall, drawn
// at most every UI_MS.

import { BUDGET_MS, STAGES } from "./rules.js";
import { $, S } from "./state.js";

// Written only when it changes: the 200 ms refresh below would otherwise restyle it
// five times a second for nothing.
export function setStatus(kind, text) {
  const el = $("status");
  if (el.className !== `status ${kind}`) el.className = `status ${kind}`;
  if (el.textContent !== text) el.textContent = text;
}

// The log and the turn view are drawn at most every UI_MS, not per message: rewriting
// the log and reading scrollHeight forces a layout, ~0.5-1 ms per event on a loaded
// box, and a turn's dozen events arrive back to back just before its first reply audio,
// which waited behind them on the main thread.
const UI_MS = 50;
export const ui = { log: [], turn: null, timer: null, lines: 0, draws: 0 };

export function logLine(s) {
  ui.log.push(s);
  ui.lines++;
  drawSoon();
}

export function renderTurn(turn) {
  ui.turn = turn;
  drawSoon();
}

function drawSoon() {
  if (ui.timer === null) ui.timer = setTimeout(drawUi, UI_MS);
}

function drawUi() {
  ui.timer = null;
  ui.draws++;
  if (ui.log.length) {
    const el = $("log");
    el.textContent += ui.log.join("\n") + "\n";
    ui.log = [];
    if (el.textContent.length > 60000) el.textContent = el.textContent.slice(-40000);
    el.scrollTop = el.scrollHeight;
  }
  if (ui.turn) drawTurn(ui.turn);
  ui.turn = null;
}

function drawTurn(turn) {
  const tr = $("transcript");
  tr.replaceChildren();
  if (turn.transcript !== null) tr.textContent = turn.transcript || "(nothing recognised)";
  else {
    const p = document.createElement("span");
    p.className = "partial";
    p.textContent = turn.partial || "…";
    tr.append(p);
  }
  if (turn.intent !== null || Object.keys(turn.slots).length) {
    $("intent").textContent = turn.intent || "(no intent)";
    $("slots").replaceChildren(
      ...Object.entries(turn.slots).map(([k, v]) => {
        const li = document.createElement("li");
        const b = document.createElement("b");
        b.textContent = `${k} `;
        li.append(b, String(v));
        return li;
      }),
    );
  }
  const reply = turn.reply_text || turn.reply_clauses.join(" ");
  if (reply) $("reply").textContent = reply + (turn.interrupted ? " (interrupted)" : "");
}

export function renderLegend() {
  $("legend").replaceChildren(
    ...STAGES.map(([, label, colour]) => {
      const s = document.createElement("span");
      const i = document.createElement("i");
      i.style.background = `var(${colour})`;
      s.append(i, label);
      return s;
    }),
  );
}

export function renderWaterfall() {
  const turns = [...S.turns.values()].filter((t) => t.stages || t.interrupted);
  const scale = Math.max(1000, ...turns.filter((t) => t.stages).map((t) => t.v2v_ms * 1.1));
  $("waterfall").replaceChildren(
    ...turns.map((t) => {
      const row = document.createElement("div");
      row.className = "turn";
      const label = document.createElement("div");
      label.className = "label";
      label.textContent = `#${t.turn_id} ${t.transcript || ""}`;
      label.title = t.transcript || "";
      const track = document.createElement("div");
      track.className = "track";
      if (!t.stages) {
        // The user kept talking: this turn's reply was cut off (barge-in), no latency.
        const note = document.createElement("div");
        note.className = "note";
        note.textContent = "interrupted — you kept talking";
        track.append(note);
        row.append(label, track, document.createElement("div"));
        return row;
      }
      let x = 0;
      for (const [key, name, colour] of STAGES) {
        const ms = t.stages[key];
        const bar = document.createElement("div");
        bar.className = "bar";
        bar.style.left = `${(x / scale) * 100}%`;
        bar.style.width = `${(ms / scale) * 100}%`;
        bar.style.background = `var(${colour})`;
        bar.title = `${name}: ${ms.toFixed(0)} ms`;
        if (ms / scale > 0.06) bar.textContent = `${ms.toFixed(0)}`;
        track.append(bar);
        x += ms;
      }
      const budget = document.createElement("div");
      budget.className = "budget";
      budget.style.left = `${(BUDGET_MS / scale) * 100}%`;
      budget.title = `${BUDGET_MS} ms budget`;
      track.append(budget);
      const total = document.createElement("div");
      total.className = "total" + (t.v2v_ms > BUDGET_MS ? " over" : "");
      total.textContent = `${t.v2v_ms.toFixed(0)} ms`;
      row.append(label, track, total);
      return row;
    }),
    axis(scale),
  );
}

// Tick labels under the bars: 0, the budget, and the scale's end.
function axis(scale) {
  const row = document.createElement("div");
  row.className = "turn axis";
  const track = document.createElement("div");
  track.className = "ticks";
  for (const ms of [0, BUDGET_MS, scale]) {
    const t = document.createElement("span");
    t.style.left = `${(ms / scale) * 100}%`;
    t.textContent = ms === BUDGET_MS ? `${ms} ms budget` : `${Math.round(ms)} ms`;
    track.append(t);
  }
  row.append(document.createElement("div"), track, document.createElement("div"));
  return row;
}

export function updateButton() {
  const b = $("toggle");
  const live = S && S.running;
  b.textContent = live ? "Stop" : "Start talking";
  b.classList.toggle("stop", !!live);
  for (const id of ["transport", "ec", "ns", "agc"]) $(id).disabled = !!live;
}
