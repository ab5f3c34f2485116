// emoji.js: a small built-in emoji picker: plain unicode characters on
// buttons, no images and no network.

import { h } from '../shared/dom.js';

const EMOJI = [
  '😀', '😁', '😂', '🤣', '😊', '😍', '😘', '😎', '🤔', '😅',
  '😉', '🙂', '😢', '😭', '😡', '😱', '😴', '🤗', '🙄', '😬',
  '👍', '👎', '👏', '🙏', '💪', '👌', '✌️', '🙌', '👋', '🤝',
  '🎉', '❤️', '💔', '🔥', '⭐', '✅', '❌', '❓', '💯', '🎁',
  '📦', '🚚', '💰', '🛒', '📷', '☕', '🌹', '☀️', '🌙', '⏰',
];

/** Fills `container` with emoji buttons; `onPick(char)` is called on a click. */
export function mountEmojiPicker(container, onPick) {
  container.replaceChildren(...EMOJI.map((e) => h('button', { type: 'button', class: 'kf-emoji', 'aria-label': e }, e)));
  container.addEventListener('click', (ev) => {
    const button = ev.target.closest('button.kf-emoji');
    if (button) onPick(button.textContent);
  });
}
