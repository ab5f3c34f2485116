// admin_api_tokens.test.js: an admin makes an API token in the admin pages
// (headless Chromium, real kefu), in Chinese; the token reads the API; the
// admin revokes it in English, and the token is refused from then on.
// Run from the repository root:
// node --test --test-concurrency=1 tests/browser/console/

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withKefuAndBrowser, adminPage } from './lib/browser.js';

const running = withKefuAndBrowser();

async function conversationsWith(token) {
  const { kefu } = running;
  const response = await fetch(`${kefu.origin}/api/v1/conversations`, { headers: { authorization: `Bearer ${token}` } });
  return response.status;
}

test('an admin makes an API token in Chinese and revokes it in English', async () => {
  const { browser, kefu } = running;
  const { context, page } = await adminPage(browser, kefu, '/admin/api-tokens', { locale: 'zh-CN' });
  await page.locator('h1', { hasText: 'API 令牌' }).waitFor();
  await page.getByText('还没有令牌。').waitFor();

  await page.locator('input[name=name]').fill('CRM 同步');
  await page.getByRole('button', { name: '生成令牌' }).click();
  await page.getByText('请立即复制，它不会再次显示。').waitFor();
  const token = await page.locator('#new-token').inputValue();
  assert.ok(token.length > 20, token);
  const row = page.locator('tr', { hasText: 'CRM 同步' });
  await row.getByText('正常').waitFor();
  assert.equal(await conversationsWith(token), 200);

  await page.getByRole('link', { name: 'English' }).click();
  await page.locator('h1', { hasText: 'API tokens' }).waitFor();
  await row.getByRole('button', { name: 'Revoke' }).click();
  await row.getByText(/^revoked /).waitFor();
  assert.equal(await row.getByRole('button', { name: 'Revoke' }).count(), 0);
  assert.equal(await conversationsWith(token), 401);
  await context.close();
});
