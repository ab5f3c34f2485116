// browser.js: Debian's Chromium driven by playwright-core (no browser
// download), and a console or admin page logged in through its form.

import { before, after } from 'node:test';
import { chromium } from 'playwright-core';
import { Kefu, BOSS, PASSWORD } from './kefu.js';

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-quic', '--no-first-run', '--disable-sync'];

export function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ARGS });
}

/**
 * Records desktop notifications in window.__notifications, and lets the test
 * say whether the tab has focus (window.__focused), since a headless tab's
 * focus cannot be taken away by another window.
 */
const INIT = () => {
  window.__notifications = [];
  window.__focused = true;
  Document.prototype.hasFocus = () => window.__focused;
  const Real = window.Notification;
  class Recorded extends Real {
    constructor(title, options) {
      super(title, options);
      window.__notifications.push({ title, body: options?.body ?? '' });
    }
  }
  Object.defineProperty(Recorded, 'permission', { get: () => Real.permission });
  window.Notification = Recorded;
};

/** A new context (notifications granted) with a console page logged in as `email` (with `password`). */
export async function consolePage(browser, kefu, email, { locale = 'en-US', viewport = { width: 1400, height: 860 }, password = PASSWORD } = {}) {
  const context = await browser.newContext({ viewport, locale });
  await context.grantPermissions(['notifications'], { origin: kefu.origin });
  await context.addInitScript(INIT);
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(`${kefu.origin}/console`);
  await page.locator('#login-email').fill(email);
  await page.locator('#login-password').fill(password);
  await page.locator('#login-submit').click();
  await page.locator('#app').waitFor({ state: 'visible' });
  await page.locator('#connection[data-state="open"]').waitFor({ state: 'attached' });
  return { context, page };
}

/**
 * Starts Chromium and a kefu before the file's tests and stops both after them;
 * the returned object holds them (`browser`, `kefu`) once started.
 */
export function withKefuAndBrowser() {
  const running = {};
  before(async () => {
    running.browser = await launch();
    running.kefu = await Kefu.create();
    await running.kefu.start();
  });
  after(async () => {
    await running.kefu?.close();
    await running.browser?.close();
  });
  return running;
}

/** A new context with an admin page at `path`, logged in as the admin through `/admin/login`. */
export async function adminPage(browser, kefu, path, { locale = 'en-US', viewport = { width: 1280, height: 900 } } = {}) {
  const context = await browser.newContext({ viewport, locale });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error('page error:', error));
  await page.goto(`${kefu.origin}/admin/login?next=${encodeURIComponent(path)}`);
  await page.locator('input[name=email]').fill(BOSS);
  await page.locator('input[name=password]').fill(PASSWORD);
  await page.locator('button[type=submit]').click();
  return { context, page };
}

/** The bubbles of the active pane whose text is exactly `text`. */
export function bubbles(page, text) {
  return page.locator('#messages .msg .bubble').filter({ hasText: new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) });
}
