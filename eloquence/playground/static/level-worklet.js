// Audio level and voice timing for one stream, on the audio thread.
//
// Every ~50 ms it posts {type: "level", peak, rms, now, lastVoiced}; when audio turns voiced after
// `gapS` seconds of silence it posts {type: "onset", now, at} at once. Times are the AudioContext
// clock (seconds); the page converts them to performance.now(). "Voiced" means a sample above
// -40 dBFS, as eloquence talk's harness counts it.
const VOICED = 0.01;

class LevelProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.gapS = opts.gapS ?? 0.4;
    this.reportEvery = Math.round(sampleRate * 0.05);
    this.sinceReport = 0;
    this.peak = 0;
    this.sumSq = 0;
    this.count = 0;
    this.lastVoiced = -Infinity;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input.length > 0) {
      const channel = input[0];
      let blockPeak = 0;
      for (let i = 0; i < channel.length; i++) {
        const v = Math.abs(channel[i]);
        if (v > blockPeak) blockPeak = v;
        this.sumSq += channel[i] * channel[i];
      }
      this.count += channel.length;
      if (blockPeak > this.peak) this.peak = blockPeak;
      if (blockPeak > VOICED) {
        // the first voiced sample of this block
        let first = 0;
        while (first < channel.length && Math.abs(channel[first]) <= VOICED) first++;
        const at = currentTime + first / sampleRate;
        if (at - this.lastVoiced >= this.gapS) {
          this.port.postMessage({ type: "onset", now: currentTime, at });
        }
        this.lastVoiced = currentTime + channel.length / sampleRate;
      }
      this.sinceReport += channel.length;
    }
    if (this.sinceReport >= this.reportEvery) {
      this.port.postMessage({
        type: "level",
        peak: this.peak,
        rms: this.count ? Math.sqrt(this.sumSq / this.count) : 0,
        now: currentTime,
        lastVoiced: Number.isFinite(this.lastVoiced) ? this.lastVoiced : null,
      });
      this.sinceReport = 0;
      this.peak = 0;
      this.sumSq = 0;
      this.count = 0;
    }
    return true;
  }
}

registerProcessor("eloquence-level", LevelProcessor);
