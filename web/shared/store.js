// store.js: JSON values in localStorage, falling back to memory where storage
// is unavailable (some privacy modes and sandboxed iframes throw on access).

const memory = new Map();

function backend() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}

export function get(key, fallback) {
  try {
    const raw = backend()?.getItem(key) ?? memory.get(key);
    return raw == null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function set(key, value) {
  const raw = JSON.stringify(value);
  memory.set(key, raw);
  try {
    backend()?.setItem(key, raw);
  } catch {
    // Quota or privacy mode: the in-memory copy keeps this page working.
  }
}

export function remove(key) {
  memory.delete(key);
  try {
    backend()?.removeItem(key);
  } catch {
    // As in set(): nothing more to do.
  }
}
