// The chat page in real headless Chromium (Debian's, driven by playwright-core): the reply
// grows over several DOM updates and equals a gRPC client's greedy reply; a reload resumes the
// session and sends only the new message; Stop leaves the version unchanged; markup in a
// message stays text; the API-key flow; no console or CSP errors. Screenshots go to build/.
'use strict';
const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');
const { Daemon, slowModel } = require('./daemon.cjs');

const SHOTS = process.env.XLSTMD_BUILD_DIR || os.tmpdir();
let browser;
let model;

test.before(async () => {
  model = slowModel();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu'] });
});

test.after(async () => {
  await browser.close();
  fs.rmSync(model, { recursive: true, force: true });
});

// A page that records console errors, page errors, CSP violations and /turns request bodies.
async function openPage(url, context) {
  const page = await (context || browser).newPage();
  const problems = [];
  const turnBodies = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('request', (r) => { if (r.url().endsWith('/turns')) turnBodies.push(r.postData()); });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error('CSP violation: ' + e.violatedDirective));
  });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById('model').textContent !== '…');
  return { page, problems, turnBodies };
}

// Sends a message and waits for the turn to end; returns how many times the reply's text
// changed while it streamed.
async function send(page, text, { temperature = '0', maxTokens = '48' } = {}) {
  await page.fill('#temperature', temperature);
  await page.fill('#max-tokens', maxTokens);
  await page.fill('#input', text);
  const updates = page.evaluate(() => new Promise((resolve) => {
    let changes = 0;
    const log = document.getElementById('log');
    const seen = log.children.length;
    const obs = new MutationObserver(() => {
      const last = log.children[log.children.length - 1];
      if (log.children.length >= seen + 2 && last.classList.contains('assistant')) changes++;
    });
    obs.observe(log, { childList: true, subtree: true, characterData: true });
    const stop = document.getElementById('stop');
    const poll = setInterval(() => {
      if (log.children.length >= seen + 2 && stop.disabled) {
        clearInterval(poll);
        obs.disconnect();
        resolve(changes);
      }
    }, 20);
  }));
  await page.press('#input', 'Enter');
  return updates;
}

const lastReply = (page) => page.$$eval('#log .assistant', (els) => els[els.length - 1].textContent);
const shownVersion = (page) => page.textContent('#version');
const shownSession = (page) => page.textContent('#session');

test('the reply streams, equals gRPC, and a reload resumes the session', async () => {
  const d = await new Daemon([], model).start();
  try {
    const { page, problems, turnBodies } = await openPage(d.web);
    const updates = await send(page, 'Hello there');
    const reply = await lastReply(page);
    assert.ok(updates >= 3, `the reply grew over ${updates} DOM updates`);
    assert.equal(reply, d.grpcReply('Hello there', 48));
    assert.equal(await shownVersion(page), '1');
    const sid = await shownSession(page);
    await page.screenshot({ path: path.join(SHOTS, 'web-chat.png') });

    await page.reload();
    await page.waitForFunction(() => document.querySelector('#log .note') !== null);
    assert.equal(await shownSession(page), sid);
    assert.equal(await page.evaluate(() => localStorage.getItem('xlstmd.session')), sid);
    await send(page, 'And then?', { maxTokens: '4' });
    assert.equal(await shownVersion(page), '2');
    const body = JSON.parse(turnBodies[turnBodies.length - 1]);
    assert.equal(body.message, 'And then?', 'only the new message is sent');
    assert.ok(!JSON.stringify(body).includes('Hello there'), 'no history in the request');
    assert.deepEqual(problems, []);
    await page.close();
  } finally {
    assert.equal(await d.stop(), 0);
  }
});

test('Stop leaves the version unchanged; markup stays text', async () => {
  const d = await new Daemon(['--max-tokens-limit', '100000'], model).start();
  try {
    const { page, problems } = await openPage(d.web);
    let dialogs = 0;
    page.on('dialog', async (dlg) => { dialogs++; await dlg.dismiss(); });
    await send(page, 'hi', { maxTokens: '2' });
    assert.equal(await shownVersion(page), '1');
    // A long reply, stopped once it has started.
    await page.fill('#max-tokens', '4096');
    await page.fill('#input', 'a long one');
    await page.press('#input', 'Enter');
    await page.waitForFunction(() => {
      const els = document.querySelectorAll('#log .assistant');
      return els.length === 2 && els[1].textContent.length > 3;
    }, null, { timeout: 10000 }).catch(async (e) => {
      throw new Error(`${e.message}; status: ${await page.textContent('#status')}; log: ` +
        await page.textContent('#log'));
    });
    await page.click('#stop');
    await page.waitForFunction(() => document.getElementById('stop').disabled);
    assert.match(await lastReply(page), /stopped/);
    const sid = await shownSession(page);
    for (let i = 0; i < 100; i++) {
      const s = await (await fetch(`${d.web}/v1/sessions/${sid}`)).json();
      if (!s.turn_running) {
        assert.equal(s.version, '1', 'the stopped turn was rolled back');
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(await shownVersion(page), '1');

    const evil = '<img src=x onerror=alert(1)>';
    await send(page, evil, { maxTokens: '2' });
    const users = await page.$$eval('#log .user', (els) => els.map((e) => e.textContent));
    assert.equal(users[users.length - 1], evil);
    assert.equal(await page.$$eval('#log img', (els) => els.length), 0);
    assert.equal(dialogs, 0);
    assert.deepEqual(problems, []);
    await page.close();
  } finally {
    assert.equal(await d.stop(), 0);
  }
});

test('the API-key flow', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'xlstmd-web-keys-'));
  const keys = path.join(dir, 'keys');
  fs.writeFileSync(keys, 'alice key-alice-1234567890\n', { mode: 0o600 });
  const d = await new Daemon(['--api-keys-file', keys], model).start();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const problems = [];
    let asked = 0;
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    page.on('dialog', async (dlg) => {
      asked++;
      await dlg.accept('key-alice-1234567890');
    });
    await page.goto(d.web);
    await page.waitForFunction(() => document.getElementById('model').textContent !== '…');
    assert.equal(asked, 1, 'asked for the key once, on the first 401');
    await send(page, 'hi', { maxTokens: '3' });
    assert.equal(await shownVersion(page), '1');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('xlstmd.apiKey')),
      'key-alice-1234567890');
    const stored = await page.evaluate(() => JSON.stringify(localStorage));
    assert.ok(!stored.includes('key-alice'), 'the key is never in localStorage');
    // The only console errors are the browser's own line for the first 401.
    assert.ok(problems.every((p) => /401/.test(p)), problems.join('\n'));
    await page.screenshot({ path: path.join(SHOTS, 'web-chat-keys.png') });
    await context.close();
  } finally {
    assert.equal(await d.stop(), 0);
  }
});
