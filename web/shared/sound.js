// sound.js: the new-message tone of the widget panel and the agent console, served once at
// /shared/sound.js. Browsers start an AudioContext suspended until a user gesture, so each
// page unlocks it on its first click and beeps only while it runs.

/** A quarter-second 880 Hz tone with a soft attack and decay, when `audio` (an AudioContext) runs. */
export function beep(audio) {
  if (audio?.state !== 'running') return;
  const now = audio.currentTime;
  const oscillator = audio.createOscillator();
  const gain = audio.createGain();
  oscillator.frequency.value = 880;
  gain.gain.setValueAtTime(0.0001, now);
  gain.gain.exponentialRampToValueAtTime(0.2, now + 0.02);
  gain.gain.exponentialRampToValueAtTime(0.0001, now + 0.25);
  oscillator.connect(gain).connect(audio.destination);
  oscillator.start(now);
  oscillator.stop(now + 0.3);
}

/** The page's AudioContext, created and resumed on a user gesture (browsers start it suspended). */
export function unlockAudio(audio) {
  const Context = window.AudioContext || window.webkitAudioContext;
  const context = audio || (Context ? new Context() : null);
  if (context?.state === 'suspended') context.resume();
  return context;
}
