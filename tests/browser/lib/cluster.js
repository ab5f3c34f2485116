// cluster.js: kefu as a cluster for a browser test: a private PostgreSQL 15 (Debian's binaries,
// run as the postgres user when the tests run as root) and nats-server, each on a free port in a
// temporary directory, and `kefu serve` nodes on them (`storage.backend = "postgres"`). The first
// node's first start makes the admin and the default site, whose password and key it prints.
// `Cluster.start()` answers null when PostgreSQL or nats-server is not installed (the test says
// it was skipped); `.ci/run` installs both.

import { spawn, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { BIN, request } from './kefu.js';

const run = promisify(execFile);
const PG_BIN = '/usr/lib/postgresql/15/bin';
const NATS_CANDIDATES = ['/usr/sbin/nats-server', '/usr/bin/nats-server'];

/** What is missing for a cluster here, or null. */
export function missing() {
  if (!existsSync(`${PG_BIN}/postgres`)) return `PostgreSQL 15 is not installed (${PG_BIN}/postgres)`;
  if (!NATS_CANDIDATES.some(existsSync)) return 'nats-server is not installed';
  return null;
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Resolves once `check` passes, trying every 100 ms for up to 20 s. */
async function until(what, check) {
  for (let i = 0; i < 200; i += 1) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not come up`);
}

/** One `kefu serve` node: `origin`, `siteKey`, `request()` as the single-server helper has. */
class Node {
  constructor(child, addr, siteKey) {
    this.child = child;
    this.addr = addr;
    this.siteKey = siteKey;
  }

  get origin() {
    return `http://${this.addr}`;
  }

  request(method, path, options) {
    return request(this.origin, method, path, options);
  }
}

export class Cluster {
  /** PostgreSQL, NATS and `nodes` kefu nodes, started one after the other; null when not installed. */
  static async start({ nodes = 2 } = {}) {
    if (missing()) return null;
    const cluster = new Cluster(await mkdtemp(join(tmpdir(), 'kefu-cluster-')));
    try {
      await cluster.startPostgres();
      await cluster.startNats();
      for (let i = 0; i < nodes; i += 1) await cluster.startNode();
    } catch (error) {
      await cluster.close();
      throw error;
    }
    return cluster;
  }

  constructor(dir) {
    this.dir = dir;
    this.children = [];
    this.nodes = [];
    this.log = [];
    this.adminPassword = null;
    this.siteKey = null;
  }

  async startPostgres() {
    const asPostgres = userInfo().uid === 0 ? ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', '--'] : [];
    if (asPostgres.length) {
      const { stdout } = await run('id', ['-u', 'postgres']);
      const { stdout: group } = await run('id', ['-g', 'postgres']);
      await chown(this.dir, Number(stdout.trim()), Number(group.trim()));
    }
    const command = (program, args) => (asPostgres.length ? [asPostgres[0], [...asPostgres.slice(1), program, ...args]] : [program, args]);
    await run(...command(`${PG_BIN}/initdb`, ['-D', join(this.dir, 'data'), '-U', 'postgres', '-A', 'trust']));
    this.pgPort = await freePort();
    const [program, args] = command(`${PG_BIN}/postgres`, ['-D', join(this.dir, 'data'), '-p', String(this.pgPort), '-k', this.dir,
      '-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300']);
    this.postgres = this.spawnChild(program, args);
    await until('PostgreSQL', async () => (await run('pg_isready', ['-h', '127.0.0.1', '-p', String(this.pgPort)])) && true);
    await run('createdb', ['-h', '127.0.0.1', '-p', String(this.pgPort), '-U', 'postgres', 'kefu']);
  }

  async startNats() {
    this.natsPort = await freePort();
    this.spawnChild(NATS_CANDIDATES.find(existsSync), ['-a', '127.0.0.1', '-p', String(this.natsPort)]);
    await until('nats-server', () => new Promise((resolveUp) => {
      const socket = connect(this.natsPort, '127.0.0.1');
      socket.once('connect', () => { socket.destroy(); resolveUp(true); });
      socket.once('error', () => resolveUp(false));
    }));
  }

  spawnChild(program, args, env = process.env) {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    createInterface({ input: child.stderr }).on('line', (line) => this.log.push(line));
    this.children.push(child);
    return child;
  }

  /** Starts one more node; the first one prints the admin's password and the default site. */
  startNode() {
    const n = this.nodes.length + 1;
    const env = {
      ...process.env,
      KEFU_QUIC: 'off',
      KEFU_METRICS: 'off',
      KEFU_STORAGE__BACKEND: 'postgres',
      KEFU_STORAGE__POSTGRES_URL: `postgresql://postgres@127.0.0.1:${this.pgPort}/kefu`,
      KEFU_CLUSTER__NATS_URL: `nats://127.0.0.1:${this.natsPort}`,
      KEFU_CLUSTER__NODE: `browser-${n}`,
    };
    const child = this.spawnChild(BIN, ['serve', '--data-dir', join(this.dir, `node-${n}`), '--http', '127.0.0.1:0'], env);
    return new Promise((resolveNode, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        this.log.push(line);
        const password = line.match(/^\s*password:\s+(\S+)/);
        if (password) this.adminPassword = password[1];
        const site = line.match(/default site key:\s+(\S+)/);
        if (site) this.siteKey = site[1];
        const listening = line.match(/listening http=(\S+)/);
        if (listening) {
          const node = new Node(child, listening[1], null);
          this.nodes.push(node);
          resolveNode(node);
        }
      });
      child.once('exit', (code, signal) => reject(new Error(`kefu serve exited (${code ?? signal}):\n${this.log.join('\n')}`)));
    }).then((node) => {
      for (const each of this.nodes) each.siteKey = this.siteKey;
      return node;
    });
  }

  async close() {
    for (const child of this.children.reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((r) => child.once('exit', r));
      // PostgreSQL's immediate shutdown takes its backends with it; the rest are killed.
      child.kill(child === this.postgres ? 'SIGQUIT' : 'SIGKILL');
      await exited;
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
