// browser.js: headless Debian Chromium driven by playwright-core (no browser
// downloads), and helpers to reach the widget inside a host page.

import { chromium } from 'playwright-core';

const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-quic', '--no-first-run', '--disable-sync'];

export function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: ARGS });
}

/** The launcher bubble (inside the loader's shadow root, which locators pierce). */
export function bubble(page) {
  return page.locator('kefu-widget button');
}

/** The chat panel's frame inside a host page, once the loader has created it. */
export async function panelFrame(page) {
  await page.locator('kefu-widget iframe').waitFor({ state: 'attached' });
  const handle = await page.locator('kefu-widget iframe').elementHandle();
  const frame = await handle.contentFrame();
  await frame.waitForLoadState('domcontentloaded');
  return frame;
}

/** Opens the widget by clicking its bubble and returns the panel frame, ready to type in. */
export async function openWidget(page) {
  await bubble(page).click();
  const frame = await panelFrame(page);
  await frame.locator('#input').waitFor({ state: 'visible' });
  return frame;
}

/** Types a message into the panel and sends it with Enter. */
export async function typeMessage(frame, text) {
  await frame.locator('#input').fill(text);
  await frame.locator('#input').press('Enter');
}

/** The panel's message item whose bubble has exactly this text. */
export function messageItem(frame, text) {
  return frame.locator('li.kf-msg').filter({ has: frame.getByText(text, { exact: true }) });
}
