// dom.js: building elements for the widget panel and the agent console, served once at
// /shared/dom.js. Everything that comes from a visitor, an agent or the server goes in as
// text (text nodes, textContent, attribute values), never as HTML.

/**
 * An element with attributes and children. An `on...` attribute adds an event listener;
 * null, undefined and false attributes and children are skipped; arrays of children are
 * flattened; strings and numbers become text nodes.
 */
export function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/**
 * Text someone typed (a name, an email, a page title), inside running text: a <bdi> isolates its
 * direction, so a right-to-left override in it cannot reorder the text around it.
 */
export function bdi(text) {
  return h('bdi', {}, text ?? '');
}

/**
 * Someone's text inside a string where no element can go (an <option>, a notification, a
 * sentence such as "Ada is typing"): wrapped in first-strong isolate ... pop directional
 * isolate, the text form of <bdi>.
 */
export function isolated(text) {
  return `\u2068${text ?? ''}\u2069`;
}

/** Bidi controls (embeddings, overrides, isolates, marks) that can make "gpj.exe" read "exe.jpg". */
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** A file name as it is shown: its bidi controls replaced, so the extension shown is the real one. */
export function shownFileName(name) {
  return name ? name.replace(BIDI_CONTROLS, '\ufffd') : '';
}
