// notify.js: getting the visitor's attention when an agent replies: a short
// beep generated with WebAudio (no sound files) and a blinking document title
// while the page is hidden. Both can be switched off in the panel's settings,
// which persist in localStorage for every site.

import * as store from '../shared/store.js';
import * as sound from '../shared/sound.js';

const KEY = 'kefu.settings';

export const settings = { sound: true, blink: true, ...store.get(KEY, {}) };

export function saveSettings() {
  store.set(KEY, settings);
}

let audio = null;

/** Browsers only let audio start after a gesture: call this from one (click, key). */
export function unlockAudio() {
  audio = sound.unlockAudio(audio);
}

/** The new-reply tone, unless the visitor switched it off. */
export function beep() {
  if (settings.sound) sound.beep(audio);
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
