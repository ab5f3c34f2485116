// kefu.js: runs a real kefu server for a test. Sites and agents are created
// with `kefu admin` on a fresh data directory before `kefu serve` starts;
// start() waits for the server's "listening http=ADDR" line (never a sleep);
// kill() ends it abruptly and start() again reuses the same data and port.

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const BIN = process.env.TEST_KEFU_BIN || resolve(import.meta.dirname, '../../../target/debug/kefu');
export const AGENT = { email: 'a@x.test', password: 'pw123456pw' };

export class Kefu {
  /**
   * A server with one site (any origin allowed) and its agents, not yet started.
   * `agents` lists [email, role] pairs (all with AGENT.password); `env` is added to the server's environment;
   * `welcomeText` is the site's welcome text; `origin` the one origin the site allows.
   */
  static async create({ enforceIdentity = false, agents = [[AGENT.email, 'agent']], env = {}, welcomeText = null, origin = '*' } = {}) {
    const kefu = new Kefu(await mkdtemp(join(tmpdir(), 'kefu-browser-')), env);
    const site = await kefu.admin('create-site', '--name', 'Demo', '--origin', origin, ...(enforceIdentity ? ['--enforce-identity'] : []),
      ...(welcomeText === null ? [] : ['--welcome-text', welcomeText]));
    kefu.siteKey = site.site_key;
    kefu.siteSecret = site.site_secret;
    for (const [email, role] of agents) {
      const args = ['create-agent', '--email', email, '--password', AGENT.password, '--role', role];
      await kefu.admin(...args, ...(role === 'agent' ? ['--site', kefu.siteKey] : []));
    }
    return kefu;
  }

  constructor(dataDir, env = {}) {
    this.env = env;
    this.dataDir = dataDir;
    this.child = null;
    this.addr = '127.0.0.1:0';
    this.log = [];
  }

  get origin() {
    return `http://${this.addr}`;
  }

  /** Runs `kefu admin ARGS` and returns its key=value stdout lines as an object. */
  async admin(...args) {
    const { stdout } = await run(BIN, ['admin', ...args, '--data-dir', this.dataDir]);
    return Object.fromEntries(stdout.split('\n').map((l) => l.trim().match(/^(\w+)=(.*)$/)).filter(Boolean).map((m) => [m[1], m[2]]));
  }

  /** Starts `kefu serve` (on the previous port after a kill) and resolves once it is listening. */
  start() {
    // QUIC and metrics would take fixed ports; these tests need neither.
    const env = { ...process.env, KEFU_QUIC: 'off', KEFU_METRICS: 'off', ...this.env };
    const child = spawn(BIN, ['serve', '--data-dir', this.dataDir, '--http', this.addr], { stdio: ['ignore', 'pipe', 'pipe'], env });
    this.child = child;
    createInterface({ input: child.stderr }).on('line', (l) => this.log.push(l));
    return new Promise((resolvePromise, reject) => {
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        this.log.push(line);
        const m = line.match(/listening http=(\S+)/);
        if (m) {
          this.addr = m[1];
          resolvePromise(this);
        }
      });
      child.once('exit', (code, signal) => reject(new Error(`kefu serve exited (${code ?? signal}):\n${this.log.join('\n')}`)));
    });
  }

  /** Ends the server at once (SIGKILL), as a crash or power cut would. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  async close() {
    await this.kill();
    await rm(this.dataDir, { recursive: true, force: true });
  }

  /** An HTTP request to the server; resolves {status, body} with the JSON body parsed. */
  request(method, path, options) {
    return request(this.origin, method, path, options);
  }

  /** Logs an agent in over HTTP; resolves the login answer ({token, agent}). */
  async login(email) {
    const answer = await this.request('POST', '/api/v1/agent/login', { body: { email, password: AGENT.password } });
    if (answer.status !== 200) throw new Error(`login ${email}: ${answer.status}`);
    return answer.body;
  }
}

/** An HTTP request to the server at `origin`; resolves {status, body} with the JSON body parsed. */
export async function request(origin, method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(origin + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}
