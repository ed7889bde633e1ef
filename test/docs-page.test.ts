import { type Browser, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RoleProcess, startRoles } from './helpers/roles.js';

describe('the API docs page in a real browser', () => {
  let backend: RoleProcess;
  let api: RoleProcess;
  let browser: Browser;

  beforeAll(async () => {
    ({ backend, api } = await startRoles());
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-quic',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await Promise.all([api?.stop(), backend?.stop()]);
  });

  it('renders the greet operation from locally served assets', async () => {
    const page = await browser.newPage();
    const external: string[] = [];
    page.on('request', (request) => {
      if (!request.url().startsWith(api.url)) external.push(request.url());
    });
    await page.goto(`${api.url}/docs`);
    // Exactly /greet (Swagger UI puts a zero-width space before each slash), so that a fork's
    // /greet-many does not match too.
    const path = page.locator('.opblock-summary-path').filter({ hasText: /^\u200b?\/greet$/ });
    await path.waitFor({ timeout: 15_000 });
    const operation = page.locator('.opblock').filter({ has: path });
    expect(await operation.locator('.opblock-summary-method').textContent()).toBe('POST');
    expect(external.filter((url) => !url.startsWith('data:'))).toEqual([]);
    // The docs are served by an instance of their own: it logs no request lines either.
    const fastifyRequestLines = /^(incoming request|request completed)$/;
    expect(api.logs().filter((line) => fastifyRequestLines.test(String(line.message)))).toEqual([]);
  });
});
