// push.test.js: Web Push opt-in in the console. Turning "Notifications" on registers the
// console's service worker (/console/sw.js) and posts the browser's push subscription; with the
// console closed, a visitor's message then reaches the push service as an encrypted, VAPID-signed
// request, which this test's push service stand-in decrypts with the subscription's keys.
//
// Headless Chromium has no real push service here, so the page's
// PushManager.prototype.subscribe (and getSubscription) are stubbed: they return a subscription
// built from this test's keys that points at the stand-in. Everything else is real: the service
// worker registration, the console's switch, kefu's API, its encryption and its sending.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createDecipheriv, createECDH, createPublicKey, hkdfSync, randomBytes, verify } from 'node:crypto';
import { Kefu, ANN, BOB } from './lib/kefu.js';
import { Visitor } from './lib/visitor.js';
import { launch, consolePage, bubbles } from './lib/browser.js';

let browser;
let kefu;
let standIn;
let visitors = [];

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

afterEach(async () => {
  for (const visitor of visitors) visitor.close();
  visitors = [];
  await kefu?.close();
  standIn?.server.close();
});

/** A push service on loopback that keeps every request and answers 201. */
async function pushService() {
  const received = [];
  const waiters = [];
  const server = createServer((request, response) => {
    const chunks = [];
    request.on('data', (chunk) => chunks.push(chunk));
    request.on('end', () => {
      received.push({ path: request.url, headers: request.headers, body: Buffer.concat(chunks) });
      response.writeHead(201).end();
      for (const wake of waiters.splice(0)) wake();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  const next = async (timeoutMs = 20000) => {
    const deadline = Date.now() + timeoutMs;
    while (received.length === 0) {
      if (Date.now() > deadline) throw new Error('no push request arrived');
      await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 500); });
    }
    return received.shift();
  };
  return { server, origin, received, next };
}

const b64url = (bytes) => Buffer.from(bytes).toString('base64url');

/** Decrypts an aes128gcm body (RFC 8291) with the subscription's private key and auth secret. */
function decrypt(body, ecdh, auth) {
  const salt = body.subarray(0, 16);
  const idLength = body[20];
  const serverPublic = body.subarray(21, 21 + idLength);
  const sealed = body.subarray(21 + idLength);
  const shared = ecdh.computeSecret(serverPublic);
  const label = (text, ...parts) => Buffer.concat([Buffer.from(`${text}\0`), ...parts]);
  const ikm = Buffer.from(hkdfSync('sha256', shared, auth, label('WebPush: info', ecdh.getPublicKey(), serverPublic), 32));
  const key = Buffer.from(hkdfSync('sha256', ikm, salt, label('Content-Encoding: aes128gcm'), 16));
  const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, label('Content-Encoding: nonce'), 12));
  const decipher = createDecipheriv('aes-128-gcm', key, nonce);
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  const plain = Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - 16)), decipher.final()]);
  assert.equal(plain[plain.length - 1], 2, 'one record, ending with the delimiter 2');
  return JSON.parse(plain.subarray(0, plain.length - 1).toString('utf8'));
}

/** Checks the VAPID token (RFC 8292) against the key browsers subscribe with; returns its claims. */
function checkVapid(headers, serverKey, audience) {
  const [, token, key] = headers.authorization.match(/^vapid t=([^,]+), k=(\S+)$/);
  assert.equal(key, serverKey);
  const raw = Buffer.from(key, 'base64url');
  const publicKey = createPublicKey({
    key: { kty: 'EC', crv: 'P-256', x: b64url(raw.subarray(1, 33)), y: b64url(raw.subarray(33, 65)) },
    format: 'jwk',
  });
  const [header, claims, signature] = token.split('.');
  const signed = verify('sha256', Buffer.from(`${header}.${claims}`), { key: publicKey, dsaEncoding: 'ieee-p1363' },
    Buffer.from(signature, 'base64url'));
  assert.ok(signed, 'an ES256 signature by the VAPID key');
  const decoded = JSON.parse(Buffer.from(claims, 'base64url').toString('utf8'));
  assert.equal(decoded.aud, audience);
  const now = Date.now() / 1000;
  assert.ok(decoded.exp > now && decoded.exp <= now + 24 * 3600, `exp within a day: ${decoded.exp}`);
  assert.ok(decoded.sub, 'a contact');
  return decoded;
}

test('the notifications switch subscribes, and a message with the console closed is pushed', async () => {
  standIn = await pushService();
  kefu = await Kefu.create({ KEFU_PUSH__ALLOW_LOOPBACK_ENDPOINTS: 'true', KEFU_ROUTING__OFFLINE_GRACE_SECS: '0' });
  await kefu.start();
  const ann = await kefu.login(ANN);
  const bob = await kefu.login(BOB);
  const { body: { public_key: serverKey } } = await kefu.request('GET', '/api/v1/push/key', { token: ann.token });

  // The browser's side of the subscription, as PushManager would make it.
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  const auth = randomBytes(16);
  const subscription = { endpoint: `${standIn.origin}/push/ann`, p256dh: b64url(ecdh.getPublicKey()), auth: b64url(auth) };

  const { context, page } = await consolePage(browser, kefu, ANN, { locale: 'zh-CN' });
  await page.locator('#push-switch[data-state="off"]').waitFor();
  assert.equal(await page.locator('#push-switch').textContent(), ' 通知');
  await page.evaluate((sub) => {
    let current = null;
    const made = {
      endpoint: sub.endpoint,
      expirationTime: null,
      toJSON: () => ({ endpoint: sub.endpoint, expirationTime: null, keys: { p256dh: sub.p256dh, auth: sub.auth } }),
      unsubscribe: async () => { current = null; return true; },
    };
    PushManager.prototype.subscribe = async function subscribe(options) {
      window.__applicationServerKey = btoa(String.fromCharCode(...new Uint8Array(options.applicationServerKey)))
        .replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
      current = made;
      return made;
    };
    PushManager.prototype.getSubscription = async function getSubscription() { return current; };
  }, subscription);

  await page.locator('#push-toggle').check();
  await page.locator('#push-switch[data-state="on"]').waitFor();
  assert.equal(await page.evaluate(() => window.__applicationServerKey), serverKey, 'subscribed with kefu\'s VAPID key');
  const worker = await page.evaluate(async () => {
    const registration = await navigator.serviceWorker.getRegistration('/console');
    return { scope: registration?.scope, script: registration?.active?.scriptURL };
  });
  assert.equal(worker.scope, `${kefu.origin}/console`);
  assert.equal(worker.script, `${kefu.origin}/console/sw.js`);
  const stored = await kefu.request('GET', '/api/v1/push/subscriptions', { token: ann.token });
  assert.deepEqual(stored.body.map((s) => [s.endpoint, s.language]), [[subscription.endpoint, 'zh-CN']]);

  // The console closes; once kefu sees Ann offline, a visitor writes.
  await context.close();
  for (const deadline = Date.now() + 20000; ;) {
    const agents = await kefu.request('GET', '/api/v1/agents', { token: bob.token });
    if (agents.body.find((agent) => agent.id === ann.agent.id)?.presence === 'offline') break;
    assert.ok(Date.now() < deadline, 'Ann goes offline');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const visitor = await Visitor.open(kefu);
  visitors.push(visitor);
  await visitor.say('请问还有货吗？');

  const pushed = await standIn.next();
  assert.equal(pushed.path, '/push/ann');
  assert.equal(pushed.headers['content-encoding'], 'aes128gcm');
  checkVapid(pushed.headers, serverKey, standIn.origin);
  const notification = decrypt(pushed.body, ecdh, auth);
  assert.equal(notification.title, '新会话 · Demo');
  assert.match(notification.body, /请问还有货吗？$/);
  assert.match(notification.url, /^\/console#conversation=\d+$/);

  // The notification's link opens the console at that conversation.
  const { context: again, page: reopened } = await consolePage(browser, kefu, ANN);
  await reopened.goto(`${kefu.origin}${notification.url}`);
  await bubbles(reopened, '请问还有货吗？').waitFor();
  assert.equal(await reopened.evaluate(() => location.hash), '', 'the link is used once');
  await again.close();
});

test('turning notifications off removes the subscription', async () => {
  standIn = await pushService();
  kefu = await Kefu.create({ KEFU_PUSH__ALLOW_LOOPBACK_ENDPOINTS: 'true' });
  await kefu.start();
  const ann = await kefu.login(ANN);
  const { context, page } = await consolePage(browser, kefu, ANN);
  await page.locator('#push-switch[data-state="off"]').waitFor();
  assert.equal(await page.locator('#push-switch').textContent(), ' Notifications');
  await page.evaluate((endpoint) => {
    let current = null;
    const made = {
      endpoint,
      toJSON: () => ({ endpoint, keys: { p256dh: 'BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4', auth: 'BTBZMqHH6r4Tts7J_aSIgg' } }),
      unsubscribe: async () => { current = null; return true; },
    };
    PushManager.prototype.subscribe = async () => { current = made; return made; };
    PushManager.prototype.getSubscription = async () => current;
  }, `${standIn.origin}/push/ann`);
  await page.locator('#push-toggle').check();
  await page.locator('#push-switch[data-state="on"]').waitFor();
  assert.equal((await kefu.request('GET', '/api/v1/push/subscriptions', { token: ann.token })).body.length, 1);
  await page.locator('#push-toggle').uncheck();
  await page.locator('#push-switch[data-state="off"]').waitFor();
  assert.deepEqual((await kefu.request('GET', '/api/v1/push/subscriptions', { token: ann.token })).body, []);
  await context.close();
});
