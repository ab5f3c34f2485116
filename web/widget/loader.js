/*
 * kefu widget loader, served at /widget.js. Embed it on any page of any origin:
 *
 *   <script src="https://KEFU_HOST/widget.js" data-site="SITE_KEY" async></script>
 *
 * It draws the launcher bubble (in a shadow root, styled from script so
 * the host page's CSS cannot reach it) and shows the chat panel in an iframe on
 * kefu's own origin. Messages to and from that iframe always name kefu's exact
 * origin and are accepted only from that origin and that frame.
 *
 * JavaScript API, window.kefu:
 *   open(), close(), toggle()
 *   setUser({id, name, email, signature})  signature = hex HMAC-SHA256(id, site secret), made on your server
 *   setAttributes({...})                   merged into the visitor's attributes
 *   setLocale("zh-CN" | "en")
 *   on("ready", fn())  on("message", fn(message))  on("unread", fn(count))
 *
 * To call the API before this script has loaded (it loads async), put this
 * before the embed tag; the queued calls run, in order, once it loads:
 *
 *   window.kefu = window.kefu || { q: [] };
 *   ['open', 'close', 'toggle', 'setUser', 'setAttributes', 'setLocale', 'on'].forEach(function (m) {
 *     kefu[m] = kefu[m] || function () { kefu.q.push([m, arguments]); };
 *   });
 */
(function () {
  'use strict';

  var script = document.currentScript || document.querySelector('script[data-site]');
  var site = script && script.getAttribute('data-site');
  if (!site || (window.kefu && window.kefu.loaded)) return;

  var ORIGIN = new URL(script.src, location.href).origin;
  var queued = (window.kefu && window.kefu.q) || [];
  var state = { open: false, user: null, attributes: null, locale: null };
  var handlers = { ready: [], message: [], unread: [] };
  var frame = null;
  var bubble = null;
  var badge = null;
  var ready = false;
  var side = 'right';
  var narrow = window.matchMedia('(max-width: 480px)');
  var blinkTimer = 0;
  var savedTitle = '';

  function css(el, styles) {
    for (var k in styles) el.style.setProperty(k, styles[k], 'important');
  }

  function emit(name, arg) {
    handlers[name].forEach(function (fn) {
      try {
        fn(arg);
      } catch (err) {
        console.error(err);
      }
    });
  }

  // Only plain data crosses into the frame (structured clone rejects functions).
  function plain(value) {
    return value == null ? null : JSON.parse(JSON.stringify(value));
  }

  function post(type, data) {
    if (!ready) return; // the 'init' message carries the state once the panel is ready
    var msg = plain(data) || {};
    msg.kefu = 1;
    msg.type = type;
    frame.contentWindow.postMessage(msg, ORIGIN);
  }

  function layout() {
    if (!frame) return;
    var full = narrow.matches;
    var box = full
      ? { top: '0', bottom: '0', left: '0', right: '0', width: '100%', height: '100%', 'border-radius': '0' }
      : { top: 'auto', bottom: '92px', width: '370px', height: 'min(600px, calc(100% - 112px))', 'border-radius': '14px' };
    if (!full) {
      box[side] = '20px';
      box[side === 'right' ? 'left' : 'right'] = 'auto';
    }
    box.display = state.open ? 'block' : 'none';
    css(frame, box);
    css(bubble, { display: state.open && full ? 'none' : 'flex' });
  }

  function setOpen(open) {
    state.open = Boolean(open);
    if (bubble) bubble.setAttribute('aria-expanded', String(state.open));
    layout();
    post(state.open ? 'open' : 'close');
  }

  function setUnread(count) {
    badge.textContent = count > 99 ? '99+' : String(count);
    css(badge, { display: count > 0 ? 'block' : 'none' });
  }

  function blink(on) {
    if (on && !blinkTimer && document.hidden) {
      savedTitle = document.title;
      var flip = false;
      blinkTimer = setInterval(function () {
        flip = !flip;
        document.title = flip ? '(' + badge.textContent + ') ' + savedTitle : savedTitle;
      }, 1000);
    } else if (!on && blinkTimer) {
      clearInterval(blinkTimer);
      blinkTimer = 0;
      document.title = savedTitle;
    }
  }

  function icon() {
    var ns = 'http://www.w3.org/2000/svg';
    var svg = document.createElementNS(ns, 'svg');
    var path = document.createElementNS(ns, 'path');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('width', '28');
    svg.setAttribute('height', '28');
    svg.setAttribute('aria-hidden', 'true');
    path.setAttribute('fill', '#fff');
    path.setAttribute('d', 'M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2zm3 7a1.5 1.5 0 1 0 0-3 1.5 1.5 0 0 0 0 3zm5 0a1.5 1.5 0 1 0 0-3 1.5 1.5 0 0 0 0 3zm5 0a1.5 1.5 0 1 0 0-3 1.5 1.5 0 0 0 0 3z');
    svg.appendChild(path);
    return svg;
  }

  function draw(config) {
    var color = /^#[0-9a-f]{3,8}$/i.test(config.color || '') ? config.color : '#1f6feb';
    side = config.position === 'left' ? 'left' : 'right';

    var host = document.createElement('kefu-widget');
    css(host, { all: 'initial', position: 'fixed', 'z-index': '2147483000', top: '0', left: '0', width: '0', height: '0', display: 'block' });
    var root = host.attachShadow({ mode: 'open' });

    bubble = document.createElement('button');
    bubble.type = 'button';
    bubble.setAttribute('aria-label', config.name || 'Chat');
    bubble.setAttribute('aria-expanded', 'false');
    bubble.title = config.name || 'Chat';
    css(bubble, {
      all: 'initial', position: 'fixed', bottom: '20px', width: '60px', height: '60px', 'border-radius': '50%',
      background: color, 'box-shadow': '0 4px 16px rgba(0,0,0,.25)', cursor: 'pointer',
      'align-items': 'center', 'justify-content': 'center', 'z-index': '2147483001',
    });
    bubble.style.setProperty(side, '20px', 'important');
    bubble.appendChild(icon());
    bubble.addEventListener('click', function () {
      setOpen(!state.open);
    });

    badge = document.createElement('span');
    css(badge, {
      all: 'initial', position: 'absolute', top: '-2px', right: '-2px', 'min-width': '20px', height: '20px', padding: '0 5px',
      'box-sizing': 'border-box', 'border-radius': '10px', background: '#e5484d', color: '#fff', display: 'none',
      font: 'bold 12px/20px system-ui, sans-serif', 'text-align': 'center',
    });
    bubble.appendChild(badge);

    frame = document.createElement('iframe');
    frame.title = config.name || 'Chat';
    frame.allow = 'autoplay';
    frame.src = ORIGIN + '/widget/panel.html?site=' + encodeURIComponent(site) + '&embed=1&parent=' + encodeURIComponent(location.origin);
    css(frame, {
      all: 'initial', position: 'fixed', border: '0', background: '#fff', 'color-scheme': 'light',
      'box-shadow': '0 8px 40px rgba(0,0,0,.22)', 'z-index': '2147483001', 'max-width': '100%', 'max-height': '100%',
    });

    root.appendChild(frame);
    root.appendChild(bubble);
    (document.body || document.documentElement).appendChild(host);
    if (narrow.addEventListener) narrow.addEventListener('change', layout);
    setOpen(state.open);
  }

  window.addEventListener('message', function (e) {
    if (!frame || e.source !== frame.contentWindow || e.origin !== ORIGIN) return;
    var d = e.data;
    if (!d || d.kefu !== 1) return;
    if (d.type === 'ready') {
      var first = !ready;
      ready = true;
      post('init', {
        open: state.open, user: state.user, attributes: state.attributes, locale: state.locale,
        page: { url: location.href, title: document.title, referrer: document.referrer },
      });
      if (first) emit('ready');
    } else if (d.type === 'unread') {
      setUnread(d.count);
      blink(d.count > 0 && d.blink);
      emit('unread', d.count);
    } else if (d.type === 'message') {
      emit('message', d.message);
    } else if (d.type === 'close') {
      setOpen(false);
    }
  });

  document.addEventListener('visibilitychange', function () {
    if (!document.hidden) blink(false);
  });

  var api = {
    loaded: true,
    open: function () { setOpen(true); },
    close: function () { setOpen(false); },
    toggle: function () { setOpen(!state.open); },
    setUser: function (user) {
      state.user = user ? { id: user.id, name: user.name, email: user.email, signature: user.signature } : null;
      post('user', { user: state.user });
    },
    setAttributes: function (attributes) {
      var merged = state.attributes || {};
      for (var k in attributes) merged[k] = attributes[k];
      state.attributes = plain(merged);
      post('attributes', { attributes: state.attributes });
    },
    setLocale: function (tag) {
      state.locale = String(tag);
      post('locale', { locale: state.locale });
    },
    on: function (name, fn) {
      if (!handlers[name] || typeof fn !== 'function') return;
      handlers[name].push(fn);
      if (name === 'ready' && ready) fn();
    },
  };
  window.kefu = api;
  queued.forEach(function (call) {
    if (api[call[0]]) api[call[0]].apply(api, call[1]);
  });

  // A refused page gets a 403 it may read (kefu answers it with CORS headers), so the reason can
  // be spelled out here rather than left to the browser's bare CORS error.
  fetch(ORIGIN + '/api/v1/sites/' + encodeURIComponent(site) + '/widget')
    .then(function (res) {
      if (res.ok) return res.json();
      return res.json().then(function (body) {
        throw body && body.error ? { code: body.error.code, message: body.error.message } : new Error('HTTP ' + res.status);
      }, function () {
        throw new Error('HTTP ' + res.status);
      });
    })
    .then(draw, function (err) {
      if (err && err.code === 'origin_not_allowed') {
        console.error('kefu: the chat widget is not shown because this page\'s origin ' + location.origin +
          ' is not among the allowed origins of site ' + site + '. Add it on kefu\'s admin page of the site (' +
          ORIGIN + '/admin/sites/' + encodeURIComponent(site) + '), where refused origins are listed with an "Allow" button.');
      } else if (err && err.code === 'not_found') {
        console.error('kefu: there is no site with the key ' + site + ' (the data-site attribute of the widget script); the chat widget is not shown.');
      } else {
        console.warn('kefu: widget settings for site ' + site + ' unavailable:', err.message);
      }
    });
})();
