// The page's upload resampler (microphone rate -> 16 kHz), shared by both capture paths:
// app.js (the track path: MediaStreamTrackProcessor's AudioData on the main thread) and
// recorder.js (the AudioWorklet fallback).  A windowed-sinc polyphase resampler, any input
// rate at or above the output rate (44.1, 48, 96 kHz...), whose output sample j is input
// time j*in/out (no shift in the stream): each output is made as soon as the filter has
// the K input samples it needs past it (~1.8 ms at 44.1 kHz), so a stream cut into
// chunks of any size loses no time beyond that.  Why the page resamples at all (and not
// the server): recorder.js says why; 16 kHz is also a third of the bytes.
export class UploadResampler {
  // Output j lies at input position j*P/Q (P/Q = inRate/outRate in lowest terms),
  // between inputs n = floor(j*P/Q) and n+1 at phase (j*P mod Q)/Q; each of the Q phases
  // has its own 2K+1 taps of a Kaiser-windowed sinc.  Pass band to 7/8 of the output
  // Nyquist (7 kHz at 16 kHz), 60 dB down from the Nyquist on, unity gain at DC.
  constructor(inRate, outRate) {
    const gcd = (a, b) => (b ? gcd(b, a % b) : a);
    const g = gcd(inRate, outRate);
    this.P = inRate / g;
    this.Q = outRate / g;
    const nyq = outRate / 2 / inRate; // output Nyquist, cycles per input sample
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
    this.width = width;
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
    this.hist = new Float32Array(8192); // ring of recent input (> 2K+1 + a chunk)
    this.mask = this.hist.length - 1;
    this.nIn = 0; // input samples seen
    this.nOut = 0; // output samples made
  }

  // The most output samples `n` more input samples can make (a buffer size for push).
  maxOut(n) {
    return Math.ceil(((n + 1) * this.Q) / this.P) + 1;
  }

  // Feed x[from..to) and write every output sample it now allows (16-bit) to out[at...];
  // returns the new write position.
  push(x, from, to, out, at) {
    const width = this.width, taps = this.taps, hist = this.hist, mask = this.mask;
    for (let s = from; s < to; s++) {
      hist[this.nIn & mask] = x[s];
      this.nIn++;
      for (;;) {
        const num = this.nOut * this.P;
        const n = Math.floor(num / this.Q);
        if (n + this.K >= this.nIn) break; // needs input up to n + K
        const base = (num - n * this.Q) * width;
        const first = n - this.K;
        let acc = 0;
        for (let i = 0; i < width; i++) acc += taps[base + i] * hist[(first + i) & mask];
        const v = Math.max(-1, Math.min(1, acc));
        out[at++] = v < 0 ? v * 32768 : v * 32767;
        this.nOut++;
      }
    }
    return at;
  }
}
