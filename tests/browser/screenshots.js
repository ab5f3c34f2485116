// screenshots.js: saves docs/widget-closed.png, docs/widget-open.png (the demo
// shop at /demo with the widget closed, then open mid-conversation) and
// docs/widget-mobile.png (the standalone /chat/KEY page on a phone viewport),
// against a real kefu server. Run: node tests/browser/screenshots.js

import { resolve } from 'node:path';
import { Kefu } from './lib/kefu.js';
import { Agent } from './lib/agent.js';
import { launch, bubble, openWidget, typeMessage, messageItem } from './lib/browser.js';

const DOCS = resolve(import.meta.dirname, '../../docs');

const kefu = await Kefu.create();
await kefu.start();
const agent = await Agent.connect(kefu);
const browser = await launch();

/** One visitor question and the agent's answer, seen in `frame`. */
async function converse(frame, question, answer) {
  await typeMessage(frame, question);
  const msg = await agent.waitForMessage(question);
  await agent.reply(msg.conversation_id, answer);
  await messageItem(frame, answer).waitFor();
}

try {
  const desktop = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await desktop.goto(`${kefu.origin}/demo?site=${kefu.siteKey}`);
  await bubble(desktop).waitFor({ state: 'visible' });
  await desktop.screenshot({ path: `${DOCS}/widget-closed.png` });

  const panel = await openWidget(desktop);
  await converse(panel, 'Hi! Is the Longjing green tea in stock?', 'Hello! Yes, we have 40 boxes. Shall I reserve one for you? 😊');
  await panel.locator('#input').fill('Yes please');
  await desktop.screenshot({ path: `${DOCS}/widget-open.png` });

  const phone = await browser.newPage({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true, locale: 'zh-CN',
  });
  await phone.goto(`${kefu.origin}/chat/${kefu.siteKey}`);
  await phone.locator('#input').waitFor({ state: 'visible' });
  await converse(phone.mainFrame(), '你好，请问今天下单什么时候发货？', '您好！今天下午 4 点前的订单当天发货 🚚');
  await phone.screenshot({ path: `${DOCS}/widget-mobile.png` });
  console.log(`saved ${DOCS}/widget-closed.png, widget-open.png, widget-mobile.png`);
} finally {
  agent.close();
  await browser.close();
  await kefu.close();
}
