// The page's constants: frame sizes, and the measurement rule's threshold, budget, stages
// and timing-mark names.  The rule's values come from the server (/constants.js, generated
// from halfsec.measure and halfsec.trace.names), so the page and the Python clients cannot
// drift apart.

export const FRAME_MS = 20;
export const UPLOAD_RATE = 16000; // the server's rate: what the page sends when it can
// The v2v rule's audible threshold, served by the server from halfsec.measure.audible
// (/constants.js): the page and the Python clients stop the clock at the same level.
export const AUDIBLE_DBFS = HALFSEC_CONSTANTS.audible_dbfs;
export const AUDIBLE_INT16 = 32768 * 10 ** (AUDIBLE_DBFS / 20); // the same level in sample units
export const BUDGET_MS = 500;
// Timing-mark names, served by the server from halfsec.trace.names (page_span_names).
export const SPAN = HALFSEC_CONSTANTS.span_names;
export const STAGES = [
  // [key, label, colour variable, mark that ends the stage]
  ["endpointing_ms", "endpointing", "--s-endpointing", "turn.end"],
  ["stt_ms", "STT", "--s-stt", SPAN.stt_end],
  ["logic_ms", "logic", "--s-logic", SPAN.logic_first_clause],
  ["tts_ms", "TTS", "--s-tts", SPAN.tts_first_audio],
  ["server_send_ms", "send", "--s-send", SPAN.audio_sent],
  ["network_buffer_ms", "network+buffer", "--s-network", null],
];
