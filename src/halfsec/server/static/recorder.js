// AudioWorklet processor used twice by the page: once on the microphone ("what the page
// sent") and once as a tap on the playback bus ("what the page played").  It cuts the
// stream into fixed frames (20 ms by default) and posts each one with the context frame
// index of its first sample, so the main thread can place every sample on the
// AudioContext clock exactly -- no timers, no Date, no guessing.
class Recorder extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const n = (options.processorOptions && options.processorOptions.frameSamples) || 960;
    this.frame = new Float32Array(n);
    this.fill = 0;
    this.frameStart = 0; // context frame of this.frame[0]
  }

  process(inputs) {
    const input = inputs[0];
    // A disconnected or silent input arrives as zero channels; record zeros so the
    // buffer stays aligned to the context clock.
    const ch = input && input.length ? input[0] : null;
    const len = ch ? ch.length : 128;
    for (let i = 0; i < len; i++) {
      if (this.fill === 0) this.frameStart = currentFrame + i;
      this.frame[this.fill++] = ch ? ch[i] : 0;
      if (this.fill === this.frame.length) this.flush();
    }
    return true; // keep running for as long as the node exists
  }

  flush() {
    const pcm = new Int16Array(this.fill);
    for (let i = 0; i < this.fill; i++) {
      const s = Math.max(-1, Math.min(1, this.frame[i]));
      pcm[i] = s < 0 ? s * 32768 : s * 32767;
    }
    this.port.postMessage({ startFrame: this.frameStart, pcm }, [pcm.buffer]);
    this.fill = 0;
  }
}

registerProcessor("halfsec-recorder", Recorder);
