// The live view's AudioWorklet: hands the microphone's samples (channel 0, at
// the context's rate) to the page in blocks of about 20 ms, so the page
// receives fewer, larger messages than one per 128-frame render quantum.
"use strict";

class Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(Math.round(sampleRate / 50));
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      let at = 0;
      while (at < channel.length) {
        const n = Math.min(channel.length - at, this.block.length - this.filled);
        this.block.set(channel.subarray(at, at + n), this.filled);
        this.filled += n;
        at += n;
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block.slice());
          this.filled = 0;
        }
      }
    }
    return true; // keep running while the page holds the node
  }
}

registerProcessor("sona-capture", Capture);
