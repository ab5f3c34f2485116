// demo.js: boots the demo shop page (/demo). Takes the site key from ?site= or
// asks GET /api/v1/demo-site, then adds the same embed tag a real site would use.

(async function () {
  const show = (id, text) => {
    document.getElementById(id).textContent = text;
    document.getElementById(id).hidden = false;
  };
  let key = new URLSearchParams(location.search).get('site');
  if (!key) {
    try {
      const res = await fetch('/api/v1/demo-site');
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      key = (await res.json()).key;
    } catch (err) {
      show('demo-error', `No demo site available (${err.message}). Create a site and open /demo?site=SITE_KEY.`);
      return;
    }
  }
  const tag = document.createElement('script');
  tag.src = `${location.origin}/widget.js`;
  tag.async = true;
  tag.dataset.site = key;
  document.body.append(tag);
  show('snippet', `<script src="${tag.src}" data-site="${key}" async></script>`);
  document.getElementById('chat-link').href = `/chat/${encodeURIComponent(key)}`;
})();
