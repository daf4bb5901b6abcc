// AudioWorklet processor used twice by the page: once on the microphone ("what the page
// sent") and once as a tap on the playback bus ("what the page played").  It cuts the
// stream into fixed frames (20 ms by default) and posts each one with the context frame
// index of its first sample, so the main thread can place every sample on the
// AudioContext clock exactly -- no timers, no Date, no guessing.
//
// On the microphone it also makes the upload (processorOptions.uploadRate, 16000): a
// windowed-sinc polyphase resampler (any context rate at or above the upload rate: 44.1,
// 48, 96 kHz...) whose output sample j is input time j*in/out (no shift in the stream),
// posted with the frame as soon as the filter has the K input samples it needs past the
// frame's end (~1.8 ms).  Why here and not on the server: the server's resampler needs
// 3 ms of input past each 20 ms frame it releases, and page frames end on 20 ms
// boundaries, so every frame waited for the next upload (+17 ms on every turn's
// end-of-turn decision, measured with benchmarks/browser_gap.py).  16 kHz is also a
// third of the bytes.
class Recorder extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = options.processorOptions || {};
    const n = o.frameSamples || 960;
    this.frame = new Float32Array(n);
    this.fill = 0;
    this.frameStart = 0; // context frame of this.frame[0]
    this.pending = null; // a full frame waiting for its upload samples: {startFrame, pcm}
    this.up = 0;
    if (o.uploadRate && sampleRate >= o.uploadRate) this.setupResampler(o.uploadRate, n);
  }

  // Output j lies at input position j*P/Q (P/Q = sampleRate/uploadRate in lowest terms),
  // between inputs n = floor(j*P/Q) and n+1 at phase (j*P mod Q)/Q; each of the Q phases
  // has its own 2K+1 taps of a Kaiser-windowed sinc.  Pass band to 7/8 of the upload
  // Nyquist (7 kHz at 16 kHz), 60 dB down from the Nyquist on, unity gain at DC.
  setupResampler(outRate, frameSamples) {
    const gcd = (a, b) => (b ? gcd(b, a % b) : a);
    const g = gcd(sampleRate, outRate);
    this.P = sampleRate / g;
    this.Q = outRate / g;
    const nyq = outRate / 2 / sampleRate; // upload Nyquist, cycles per input sample
    const pass = 0.875 * nyq;
    const atten = 60;
    const k = this.P === this.Q ? 0 : Math.ceil((atten - 7.95) / (2.285 * 2 * Math.PI * (nyq - pass)) / 2);
    const beta = 0.1102 * (atten - 8.7);
    const fc = (pass + nyq) / 2;
    const i0 = (x) => {
      let s = 1, t = 1;
      for (let i = 1; i < 40; i++) { t *= (x / (2 * i)) ** 2; s += t; }
      return s;
    };
    const width = 2 * k + 1;
    this.K = k;
    this.taps = new Float32Array(this.Q * width);
    for (let phi = 0; phi < this.Q; phi++) {
      let sum = 0;
      for (let i = 0; i < width; i++) {
        const x = i - k - phi / this.Q; // input sample's distance from the output's position
        const sinc = Math.abs(x) < 1e-9 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
        const r = k ? x / (k + 1) : 0;
        const w = i0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / i0(beta);
        this.taps[phi * width + i] = k ? sinc * w : 1;
        sum += this.taps[phi * width + i];
      }
      for (let i = 0; i < width; i++) this.taps[phi * width + i] /= sum;
    }
    this.hist = new Float32Array(8192); // ring of recent input (> 2K+1 + a frame)
    this.mask = this.hist.length - 1;
    this.nIn = 0; // input samples seen
    this.nOut = 0; // output samples made
    this.out = new Int16Array(Math.round((frameSamples * this.Q) / this.P));
    this.outFill = 0;
    this.up = outRate;
  }

  process(inputs) {
    const input = inputs[0];
    // A disconnected or silent input arrives as zero channels; record zeros so the
    // buffer stays aligned to the context clock.
    const ch = input && input.length ? input[0] : null;
    const len = ch ? ch.length : 128;
    for (let i = 0; i < len; i++) {
      if (this.fill === 0) this.frameStart = currentFrame + i;
      const s = ch ? ch[i] : 0;
      this.frame[this.fill++] = s;
      if (this.fill === this.frame.length) this.flush();
      if (this.up) this.resample(s);
    }
    return true; // keep running for as long as the node exists
  }

  resample(s) {
    this.hist[this.nIn & this.mask] = s;
    this.nIn++;
    const width = 2 * this.K + 1;
    for (;;) {
      const num = this.nOut * this.P;
      const n = Math.floor(num / this.Q);
      if (n + this.K >= this.nIn) return; // needs input up to n + K
      const base = (num - n * this.Q) * width;
      let acc = 0;
      for (let i = 0; i < width; i++) acc += this.taps[base + i] * this.hist[(n - this.K + i) & this.mask];
      const v = Math.max(-1, Math.min(1, acc));
      this.out[this.outFill++] = v < 0 ? v * 32768 : v * 32767;
      this.nOut++;
      if (this.outFill === this.out.length) {
        const p = this.pending;
        this.pending = null;
        const upload = this.out;
        this.out = new Int16Array(upload.length);
        this.outFill = 0;
        if (p) this.port.postMessage({ ...p, upload }, [p.pcm.buffer, upload.buffer]);
      }
    }
  }

  flush() {
    const pcm = new Int16Array(this.fill);
    for (let i = 0; i < this.fill; i++) {
      const s = Math.max(-1, Math.min(1, this.frame[i]));
      pcm[i] = s < 0 ? s * 32768 : s * 32767;
    }
    this.fill = 0;
    // With an upload, the frame leaves with its decimated samples (d samples later).
    if (this.up) this.pending = { startFrame: this.frameStart, pcm };
    else this.port.postMessage({ startFrame: this.frameStart, pcm }, [pcm.buffer]);
  }
}

registerProcessor("halfsec-recorder", Recorder);
