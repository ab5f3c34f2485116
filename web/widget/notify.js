// notify.js: getting the visitor's attention when an agent replies: a short
// beep generated with WebAudio (no sound files) and a blinking document title
// while the page is hidden. Both can be switched off in the panel's settings,
// which persist in localStorage for every site.

import * as store from './store.js';

const KEY = 'kefu.settings';

export const settings = { sound: true, blink: true, ...store.get(KEY, {}) };

export function saveSettings() {
  store.set(KEY, settings);
}

let audio = null;

/** Browsers only let audio start after a gesture: call this from one (click, key). */
export function unlockAudio() {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!audio && Ctx) audio = new Ctx();
  if (audio?.state === 'suspended') audio.resume();
}

/** A quarter-second 880 Hz tone with a soft attack and decay. */
export function beep() {
  if (!settings.sound || audio?.state !== 'running') return;
  const now = audio.currentTime;
  const osc = audio.createOscillator();
  const gain = audio.createGain();
  osc.frequency.value = 880;
  gain.gain.setValueAtTime(0.0001, now);
  gain.gain.exponentialRampToValueAtTime(0.2, now + 0.02);
  gain.gain.exponentialRampToValueAtTime(0.0001, now + 0.25);
  osc.connect(gain).connect(audio.destination);
  osc.start(now);
  osc.stop(now + 0.3);
}

let blinkTimer = 0;
let savedTitle = '';

/** Alternates the title with `text` while the page is hidden, until stopBlink(). */
export function blinkTitle(text) {
  if (!settings.blink || blinkTimer || !document.hidden) return;
  savedTitle = document.title;
  let flip = false;
  blinkTimer = setInterval(() => {
    flip = !flip;
    document.title = flip ? text : savedTitle;
  }, 1000);
}

export function stopBlink() {
  if (!blinkTimer) return;
  clearInterval(blinkTimer);
  blinkTimer = 0;
  document.title = savedTitle;
}
