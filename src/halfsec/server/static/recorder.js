// AudioWorklet processor that records a stream of the page's audio graph: the tap on the
// playback bus ("what the page played"), and the microphone ("what the page sent") only
// where the page cannot read the capture track itself (no MediaStreamTrackProcessor:
// Firefox, Safari; app.js says why the track is better).  It cuts the stream into fixed
// frames (20 ms by default) and posts each one with the context frame index of its
// first sample, so the main thread can place every sample on the AudioContext clock
// exactly -- no timers, no Date, no guessing.
//
// On the microphone it also makes the upload (processorOptions.uploadRate, 16000) with
// resampler.js, posted with the frame as soon as the filter has the K input samples it
// needs past the frame's end (~1.8 ms).  Why the page and not the server: the server's
// resampler needs 3 ms of input past each 20 ms frame it releases, and page frames end
// on 20 ms boundaries, so every frame waited for the next upload (+17 ms on every turn's
// end-of-turn decision, measured with benchmarks/browser_gap.py).  16 kHz is also a
// third of the bytes.
import { UploadResampler } from "./resampler.js";

class Recorder extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    const n = o.frameSamples || 960;
    this.frame = new Float32Array(n);
    this.fill = 0;
    this.frameStart = 0; // context frame of this.frame[0]
    this.pending = null; // a full frame waiting for its upload samples: {startFrame, pcm}
    this.rs = null;
    if (o.uploadRate && sampleRate >= o.uploadRate) {
      this.rs = new UploadResampler(sampleRate, o.uploadRate);
      this.out = new Int16Array(Math.round((n * o.uploadRate) / sampleRate));
      this.outFill = 0;
    }
    this.zero = new Float32Array(128);
  }

  process(inputs) {
    const input = inputs[0];
    // A disconnected or silent input arrives as zero channels; record zeros so the
    // buffer stays aligned to the context clock.
    const ch = input && input.length ? input[0] : this.zero;
    for (let i = 0; i < ch.length; i++) {
      if (this.fill === 0) this.frameStart = currentFrame + i;
      this.frame[this.fill++] = ch[i];
      if (this.fill === this.frame.length) this.flush();
      // Downsampling makes at most one output per input sample: the upload leaves as
      // soon as it is whole, with the frame it was made from.
      if (this.rs) {
        this.outFill = this.rs.push(ch, i, i + 1, this.out, this.outFill);
        if (this.outFill === this.out.length) this.post();
      }
    }
    return true; // keep running for as long as the node exists
  }

  post() {
    const p = this.pending;
    this.pending = null;
    const upload = this.out;
    this.out = new Int16Array(upload.length);
    this.outFill = 0;
    if (p) this.port.postMessage({ ...p, upload }, [p.pcm.buffer, upload.buffer]);
  }

  flush() {
    const pcm = new Int16Array(this.fill);
    for (let i = 0; i < this.fill; i++) {
      const s = Math.max(-1, Math.min(1, this.frame[i]));
      pcm[i] = s < 0 ? s * 32768 : s * 32767;
    }
    this.fill = 0;
    // With an upload, the frame leaves with its decimated samples (d samples later).
    if (this.rs) this.pending = { startFrame: this.frameStart, pcm };
    else this.port.postMessage({ startFrame: this.frameStart, pcm }, [pcm.buffer]);
  }
}

registerProcessor("halfsec-recorder", Recorder);
