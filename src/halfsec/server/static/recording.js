// The recordings (capture and tap) as stamped frames: gaps between frames, and the frames
// joined and base64 encoded for the export.

// A frame that does not start where the previous one ended: the context clock jumped
// ahead (Chromium does when its audio thread falls behind on a loaded box: 383 frames), or
// one quantum's currentFrame repeated (-128 then +128, seen on the tap), while the worklet's
// input stayed contiguous.  [context frame, frames skipped (< 0: overlap)], exported.
export function noteGap(rec, startFrame) {
  const last = rec.chunks[rec.chunks.length - 1];
  if (last && startFrame !== last[0] + last[1].length) {
    rec.gaps.push([last[0] + last[1].length, startFrame - (last[0] + last[1].length)]);
  }
}

// Contiguous Int16 buffer from the recorded frames (zeros where nothing was recorded),
// base64 encoded for the DevTools protocol.
export function joined(rec) {
  if (rec.startFrame === null || !rec.chunks.length) return { start_frame: null, b64: "" };
  const last = rec.chunks[rec.chunks.length - 1];
  const out = new Int16Array(last[0] + last[1].length - rec.startFrame);
  for (const [start, pcm] of rec.chunks) out.set(pcm, start - rec.startFrame);
  return { start_frame: rec.startFrame, b64: base64(out) };
}

// Chunks back to back (the upload's are contiguous by construction; so is the capture
// as the worklet received it, whatever its frames' context stamps say).
export function backToBack(chunks) {
  const out = new Int16Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return base64(out);
}

export function base64(pcm) {
  const bytes = new Uint8Array(pcm.buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
