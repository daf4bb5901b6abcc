// Per-turn measurement on the page (the bench recomputes the same from export()).

import { AUDIBLE_INT16, STAGES } from "./rules.js";
import { S } from "./state.js";
import { renderWaterfall } from "./ui.js";

// End of speech: last 10 ms block before the end-of-turn decision that stands 12 dB
// above the noise floor and within 35 dB of the speech peak (the rule of the bench's
// reference, halfsec/measure/end_of_speech.py, without its neural VAD) and above -55 dBFS.
function refEndMs(turn) {
  const until = turn.marks["turn.end"];
  const lv = S.capture.levels.filter(([t]) => until === undefined || until === null || t <= until + 10);
  if (!lv.length) return null;
  const sorted = lv.map((l) => l[1]).sort((a, b) => a - b);
  const floor = sorted[Math.floor(sorted.length * 0.1)];
  const peak = sorted[Math.floor(sorted.length * 0.98)];
  const thr = Math.max(floor + 12, peak - 35, -55);
  for (let i = lv.length - 1; i >= 0; i--) if (lv[i][1] > thr) return lv[i][0];
  return null;
}

// First sample of the played audio louder than the audible threshold after `fromMs`.
function firstAudibleMs(fromMs) {
  const rate = S.ctx.sampleRate;
  const thr = AUDIBLE_INT16;
  const fromFrame = (fromMs / 1000) * rate;
  for (const [start, pcm] of S.tap.chunks) {
    if (start + pcm.length <= fromFrame) continue;
    for (let i = Math.max(0, Math.ceil(fromFrame - start)); i < pcm.length; i++) {
      if (Math.abs(pcm[i]) > thr) return ((start + i) / rate) * 1000;
    }
  }
  return null;
}

// Stages telescope exactly like halfsec.measure.stages: each point is clamped between the
// previous one and the first audible sample, so speculative work counts as zero.
export function measureTurn(turn) {
  if (turn.stages || turn.interrupted || !turn.marks["turn.end"]) return;
  const ref = refEndMs(turn);
  if (ref === null) return;
  const audible = firstAudibleMs(ref);
  if (audible === null) return;
  turn.ref_end_ms = ref;
  turn.first_audible_ms = audible;
  turn.v2v_ms = audible - ref;
  const stages = {};
  let prev = ref;
  for (const [key, , , mark] of STAGES) {
    const p = mark === null ? audible : turn.marks[mark];
    const cur = p === undefined || p === null ? prev : Math.min(audible, Math.max(prev, p));
    stages[key] = cur - prev;
    prev = cur;
  }
  turn.stages = stages;
  renderWaterfall();
}

export function pending() {
  for (const t of S.started) if (!S.ended.has(t)) return true;
  for (const t of S.ended) if (!S.finished.has(t)) return true;
  return false;
}
