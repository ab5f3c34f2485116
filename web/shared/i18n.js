// i18n.js: the one translation helper of the widget panel and the agent console, served once
// at /shared/i18n.js. Each page keeps its own words (widget/i18n.js, console/i18n.js) and gets
// t(), the locale and apply() from here. Elements with data-i18n get their textContent
// replaced, data-i18n-placeholder their placeholder, data-i18n-title their title and
// aria-label; translations go in as text, never as HTML.

/** Maps any browser or caller locale tag onto one of the supported locales. */
export function pickLocale(tag) {
  return /^zh/i.test(String(tag || '')) ? 'zh-CN' : 'en';
}

/**
 * A translator over `words` ({en: {...}, 'zh-CN': {...}}), starting in the browser's language.
 * With `storageKey`, a language set with setLocale() is kept in localStorage and wins next time.
 */
export function translator(words, { storageKey } = {}) {
  let saved = null;
  if (storageKey) {
    try {
      saved = localStorage.getItem(storageKey);
    } catch {
      saved = null;
    }
  }
  let current = saved && Object.hasOwn(words, saved) ? saved : pickLocale(navigator.language);
  /** The string for `key` in the current locale, with {name} placeholders filled from `vars`. */
  const t = (key, vars) => {
    const s = words[current][key] ?? words.en[key] ?? key;
    return vars ? s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
  };
  return {
    t,
    locale: () => current,

    /** Switches the locale (a supported one as is, any other tag mapped); returns the one now in force. */
    setLocale(tag) {
      current = Object.hasOwn(words, tag) ? tag : pickLocale(tag);
      if (storageKey) {
        try {
          localStorage.setItem(storageKey, current);
        } catch {
          // Privacy mode: the choice lasts for this page only.
        }
      }
      return current;
    },

    /** Fills every [data-i18n], [data-i18n-placeholder] and [data-i18n-title] under `root`. */
    apply(root = document) {
      document.documentElement.lang = current;
      for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
      for (const el of root.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
      for (const el of root.querySelectorAll('[data-i18n-title]')) {
        el.title = t(el.dataset.i18nTitle);
        el.setAttribute('aria-label', el.title);
      }
    },
  };
}
