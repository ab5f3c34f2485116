// kefu.js: a real kefu server for a console test. Sites and agents are made
// with `kefu admin` on a fresh data directory before `kefu serve` starts;
// start() waits for the "listening http=ADDR" line (never a sleep); kill()
// ends the server abruptly and start() again reuses the data and the port.

import { spawn, execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const BIN = process.env.KEFU_BIN || resolve(import.meta.dirname, '../../../../target/debug/kefu');
export const PASSWORD = 'pw123456pw';
export const ANN = 'ann@x.test';
export const BOB = 'bob@x.test';
export const BOSS = 'boss@x.test';

export class Kefu {
  /** A server with one site (any origin), agents Ann and Bob, and an admin; not yet started. */
  static async create(env = {}) {
    const kefu = new Kefu(await mkdtemp(join(tmpdir(), 'kefu-console-')), env);
    const site = await kefu.admin('create-site', '--name', 'Demo', '--origin', '*');
    kefu.siteKey = site.site_key;
    for (const [email, role] of [[ANN, 'agent'], [BOB, 'agent'], [BOSS, 'admin']]) {
      const args = ['create-agent', '--email', email, '--password', PASSWORD, '--role', role];
      await kefu.admin(...args, ...(role === 'agent' ? ['--site', kefu.siteKey] : []));
    }
    return kefu;
  }

  constructor(dataDir, env) {
    this.dataDir = dataDir;
    this.env = env;
    this.child = null;
    this.addr = '127.0.0.1:0';
    this.log = [];
  }

  get origin() {
    return `http://${this.addr}`;
  }

  async admin(...args) {
    const { stdout } = await run(BIN, ['admin', ...args, '--data-dir', this.dataDir]);
    return Object.fromEntries(stdout.split('\n').map((l) => l.trim().match(/^(\w+)=(.*)$/)).filter(Boolean).map((m) => [m[1], m[2]]));
  }

  start() {
    const child = spawn(BIN, ['serve', '--data-dir', this.dataDir, '--http', this.addr], {
      stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KEFU_QUIC: 'off', KEFU_METRICS: 'off', ...this.env },
    });
    this.child = child;
    createInterface({ input: child.stderr }).on('line', (l) => this.log.push(l));
    return new Promise((resolvePromise, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
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

  /** An HTTP request; resolves {status, body} with JSON parsed. */
  async request(method, path, { token, body } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(this.origin + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: res.status, body: json };
  }

  async login(email) {
    const answer = await this.request('POST', '/api/v1/agent/login', { body: { email, password: PASSWORD } });
    if (answer.status !== 200) throw new Error(`login ${email}: ${answer.status}`);
    return answer.body;
  }
}
