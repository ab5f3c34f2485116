// kefu.js: the console tests' server: the shared helper of ../../lib/kefu.js with two agents
// (Ann, Bob) and an admin (Boss) on its site.

import { Kefu as Server, AGENT } from '../../lib/kefu.js';

export { BIN } from '../../lib/kefu.js';
export const PASSWORD = AGENT.password;
export const ANN = 'ann@x.test';
export const BOB = 'bob@x.test';
export const BOSS = 'boss@x.test';

export const Kefu = {
  /** A server with one site, agents Ann and Bob and an admin; not yet started. */
  create(env = {}) {
    return Server.create({ env, agents: [[ANN, 'agent'], [BOB, 'agent'], [BOSS, 'admin']] });
  },
};
