// Drives llmgw's stats page in a real headless Chromium (Debian's
// /usr/bin/chromium, through playwright-core: no browser is downloaded).
// Run by tests/e2e/stats_page.rs, which starts the gateway and checks the
// traffic afterwards:
//
//   node stats_page.mjs --url http://127.0.0.1:PORT --user U --password P \
//        --backend b --server s2 --other s1 [--mode form|dialog]
//
// `form` (reads open): the page without JavaScript (the server-rendered
// snapshot) shows every server with its status; with JavaScript it goes
// live with the same statuses and no console error (a CSP violation would
// be one); an action before logging in is refused and changes nothing;
// the login form logs in; checking the server and applying `drain` turns
// its row to DRAIN while the other stays as it was.
// `dialog` (reads behind auth): the page is refused without credentials;
// with the browser's own basic-auth login (what its dialog does) the page
// knows who is logged in, and `maint` then `ready` applied from it show.
// Prints one JSON line per step, each timed; exits non-zero with the
// reason on failure.

import { chromium } from 'playwright-core';

function args() {
  const out = {};
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    if (!a[i].startsWith('--') || a[i + 1] === undefined) throw new Error(`bad argument ${a[i]}`);
    out[a[i].slice(2)] = a[i + 1];
  }
  for (const k of ['url', 'user', 'password', 'backend', 'server', 'other']) {
    if (!out[k]) throw new Error(`--${k} is required`);
  }
  out.mode = out.mode || 'form';
  if (!['form', 'dialog'].includes(out.mode)) throw new Error(`--mode is form or dialog, not ${out.mode}`);
  return out;
}

const opt = args();
const executablePath = process.env.LLMGW_CHROMIUM || '/usr/bin/chromium';
const WAIT = 15000;
const t0 = Date.now();
let last = t0;
function step(name, extra) {
  const now = Date.now();
  console.log(JSON.stringify({ step: name, ms: now - last, total_ms: now - t0, ...extra }));
  last = now;
}

// The states /stats.json reports, by server name.
async function states(request) {
  const r = await request.get(`${opt.url}/stats.json`);
  if (!r.ok()) throw new Error(`/stats.json: HTTP ${r.status()}`);
  const doc = await r.json();
  const b = doc.backends.find((x) => x.name === opt.backend);
  if (!b) throw new Error(`no backend ${opt.backend} in /stats.json`);
  return Object.fromEntries(b.servers.map((s) => [s.name, s.state]));
}

function row(page, server) {
  return page.locator(`section[data-backend="${opt.backend}"] tr[data-key="sv/${opt.backend}/${server}"]`);
}

async function expectState(page, server, want) {
  const cell = row(page, server).locator('td.st');
  await cell.waitFor({ timeout: WAIT });
  const deadline = Date.now() + WAIT;
  let got;
  while (Date.now() < deadline) {
    got = (await cell.textContent()).trim();
    if (got === want) return;
    await page.waitForTimeout(100);
  }
  throw new Error(`server ${server}: status shows ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
}

function watch(page) {
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // Chromium logs every 4xx fetch; the refused action below is one on purpose.
    if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  return problems;
}

async function goLive(page, want) {
  await page.goto(`${opt.url}/stats`);
  await page.locator('#tables[data-live="1"]').waitFor({ timeout: WAIT });
  for (const name of [opt.server, opt.other]) await expectState(page, name, want[name]);
  // One poll must have come and gone (the "updated" line is the script's).
  await page.waitForFunction(() => /^updated /.test(document.getElementById('live').textContent), null, { timeout: WAIT });
}

function controls(page) {
  const section = page.locator(`section[data-backend="${opt.backend}"]`);
  return {
    box: section.getByRole('checkbox', { name: `Select server ${opt.server} of backend ${opt.backend}` }),
    action: section.getByLabel('Choose the action to perform on the checked servers:'),
    apply: section.getByRole('button', { name: 'Apply' }),
    msg: page.locator('#msg'),
  };
}

async function applyAction(page, c, action) {
  if (!(await c.box.isChecked())) await c.box.check();
  await c.action.selectOption(action);
  await c.apply.click();
  await c.msg.filter({ hasText: `${action} applied` }).waitFor({ timeout: WAIT });
}

async function formMode(browser) {
  // 1. Without JavaScript: the server-rendered snapshot.
  const plain = await browser.newContext({ javaScriptEnabled: false });
  const p0 = await plain.newPage();
  const resp = await p0.goto(`${opt.url}/stats`);
  if (resp.status() !== 200) throw new Error(`/stats: HTTP ${resp.status()}`);
  const want = await states(plain.request);
  for (const name of [opt.server, opt.other]) {
    if (!want[name]) throw new Error(`no server ${name} in /stats.json`);
    await expectState(p0, name, want[name]);
  }
  await plain.close();
  step('snapshot without javascript', { states: want });

  // 2. Live page.
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const problems = watch(page);
  await goLive(page, want);
  step('live page');
  const c = controls(page);

  // 3. Not logged in: the action is refused, nothing changes.
  await c.box.check();
  await c.action.selectOption('drain');
  await c.apply.click();
  await c.msg.filter({ hasText: 'Log in to act on servers' }).waitFor({ timeout: WAIT });
  const still = await states(ctx.request);
  if (still[opt.server] !== want[opt.server]) throw new Error(`refused action changed ${opt.server}: ${still[opt.server]}`);
  step('refused before login');

  // 4. Log in through the page's form.
  await page.getByLabel('User', { exact: true }).fill(opt.user);
  await page.getByLabel('Password', { exact: true }).fill(opt.password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.locator('#who').filter({ hasText: `Logged in as ${opt.user}` }).waitFor({ timeout: WAIT });
  step('logged in');

  // 5. Drain the server from the page.
  await applyAction(page, c, 'drain');
  await expectState(page, opt.server, 'DRAIN');
  const cls = await row(page, opt.server).getAttribute('class');
  if (cls !== 'drain') throw new Error(`row of ${opt.server} has class ${cls}, expected drain`);
  await expectState(page, opt.other, want[opt.other]);
  step('drained', { message: (await c.msg.textContent()).trim() });

  if (problems.length) throw new Error(problems.join('; '));
  await ctx.close();
}

async function dialogMode(browser) {
  // 1. No credentials: no page. (A navigation would end in the browser's
  // dialog, which headless Chromium cancels: ask without navigating.)
  const anon = await browser.newContext();
  const refused = await anon.request.get(`${opt.url}/stats`);
  if (refused.status() !== 401) throw new Error(`/stats without credentials: HTTP ${refused.status()}, expected 401`);
  const challenge = refused.headers()['www-authenticate'] || '';
  if (!challenge.startsWith('Basic ')) throw new Error(`/stats challenges with ${JSON.stringify(challenge)}, expected Basic`);
  await anon.close();
  step('refused without credentials');

  // 2. The browser's own basic-auth login, as its dialog would give it.
  const ctx = await browser.newContext({ httpCredentials: { username: opt.user, password: opt.password } });
  const page = await ctx.newPage();
  const problems = watch(page);
  const want = await states(ctx.request);
  await goLive(page, want);
  await page.locator('#who').filter({ hasText: `Logged in as ${opt.user}` }).waitFor({ timeout: WAIT });
  if (await page.locator('#logout').isVisible()) throw new Error('the page offers to log out of the browser\'s own login');
  if (await page.locator('#login').isVisible()) throw new Error('the login form shows while logged in');
  step('logged in by the browser');

  // 3. Maintenance and back, from the page.
  const c = controls(page);
  await applyAction(page, c, 'maint');
  await expectState(page, opt.server, 'MAINT');
  await applyAction(page, c, 'ready');
  await expectState(page, opt.server, want[opt.server]);
  step('maint and ready');

  if (problems.length) throw new Error(problems.join('; '));
  await ctx.close();
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  // Root in CI: Chromium's sandbox needs user namespaces it may not have.
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
step('launch', { browser: browser.version(), mode: opt.mode });
try {
  if (opt.mode === 'form') await formMode(browser);
  else await dialogMode(browser);
  step('done');
} catch (e) {
  console.error(`stats page test failed after ${Date.now() - t0} ms: ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
