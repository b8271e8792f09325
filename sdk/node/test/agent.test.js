import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

import {
  AgentClient,
  AgentError,
  AgentUnavailableError,
  UntrustedAgentError,
  defaultSocketPath,
  parseChallenge,
  sessionRevoked,
  signedHost,
} from '../src/index.js';
import { env } from './env.js';

const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

function signRequest(keyId, audience) {
  return {
    key_id: keyId,
    audience,
    method: 'GET',
    authority: 'api.example.com',
    path: '/v1/x',
    query: '',
    headers: [],
    body_sha256: EMPTY_SHA256,
    signed_headers: [],
  };
}

test('agent status and keys over the socket from the environment', async () => {
  const agent = new AgentClient();
  assert.equal(agent.socketPath, env.socket);
  assert.ok((await agent.status()).version);
  const ids = (await agent.listKeys()).map((key) => key.id);
  assert.ok(ids.includes(env.keyId) && ids.includes(env.unregisteredKeyId));
});

test('agent refusals carry the agent code', async () => {
  const agent = new AgentClient();
  await assert.rejects(agent.sign(signRequest(`hk1_${'0'.repeat(32)}`, env.audience)), (error) => {
    assert.ok(error instanceof AgentError);
    assert.equal(error.code, 'unknown_key');
    assert.equal(error.status, 404);
    return true;
  });
  await assert.rejects(agent.sign(signRequest(env.keyId, 'Not An Audience')), { code: 'invalid_request' });
});

test('agent signs, authorization last', async () => {
  const answer = await new AgentClient().sign(signRequest(env.keyId, env.audience));
  const names = answer.headers.map((field) => field.name);
  assert.equal(names.at(-1), 'authorization');
  assert.ok(names.includes('x-hws-nonce'));
  assert.equal(answer.key_id, env.keyId);
});

test('a missing agent is unavailable', async () => {
  const agent = new AgentClient({ socketPath: path.join(os.tmpdir(), 'no-such-dir-hwsign', 'agent.sock') });
  await assert.rejects(() => agent.status(), AgentUnavailableError);
});

async function listenIn(dir) {
  const socketPath = path.join(dir, 'agent.sock');
  let connections = 0;
  const server = net.createServer((socket) => {
    connections += 1;
    socket.destroy();
  });
  await new Promise((resolve) => server.listen(socketPath, resolve));
  return { socketPath, server, connections: () => connections };
}

test('a socket others could have replaced is refused before connecting', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hwsign-node-'));
  fs.chmodSync(dir, 0o777);
  const listener = await listenIn(dir);
  try {
    await assert.rejects(() => new AgentClient({ socketPath: listener.socketPath }).status(), UntrustedAgentError);
    assert.equal(listener.connections(), 0);
  } finally {
    listener.server.close();
  }
});

test('a socket of another uid is refused before connecting', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hwsign-node-'));
  const listener = await listenIn(dir);
  try {
    if (process.geteuid() === 0) {
      fs.chownSync(listener.socketPath, 65534, 65534);
    }
    // Not root: the socket is this process's own, and the client is told its own uid is another.
    const ownUid = process.geteuid() === 0 ? 0 : process.geteuid() + 1;
    const agent = new AgentClient({ socketPath: listener.socketPath });
    agent.trusted = [...new Set([ownUid, 0])];
    await assert.rejects(() => agent.status(), (error) => {
      assert.ok(error instanceof UntrustedAgentError);
      assert.ok(!error.trusted.includes(error.uid));
      return true;
    });
    assert.equal(listener.connections(), 0);
  } finally {
    listener.server.close();
  }
});

test('default socket path follows the agent', () => {
  assert.equal(defaultSocketPath({ HWSIGN_AGENT_SOCK: '/x.sock' }), '/x.sock');
  assert.equal(defaultSocketPath({ XDG_RUNTIME_DIR: '/run/user/1' }), '/run/user/1/hwsign/agent.sock');
  assert.equal(defaultSocketPath({ HOME: '/home/u' }), '/home/u/.local/state/hwsign/agent.sock');
});

test('signed host rule and challenge parsing', () => {
  assert.equal(signedHost('https', 'API.Example.com:443'), 'api.example.com');
  assert.equal(signedHost('http', '127.0.0.1:8080'), '127.0.0.1:8080');
  assert.deepEqual(parseChallenge('HWS1 error="step_up_required", nonce="n"'), { error: 'step_up_required', nonce: 'n' });
  assert.equal(parseChallenge('Bearer x'), null);
});

test('session_revoked is recognized only as a 401 HWS1 challenge', () => {
  const answer = (status, value) => new Response(null, { status, headers: value ? { 'www-authenticate': value } : {} });
  assert.equal(sessionRevoked(answer(401, 'HWS1 error="session_revoked"')), true);
  assert.equal(sessionRevoked(answer(401, 'HWS1 nonce="n", error="session_revoked"')), true);
  assert.equal(sessionRevoked(answer(403, 'HWS1 error="session_revoked"')), false);
  assert.equal(sessionRevoked(answer(401, 'HWS1 error="device_revoked"')), false);
  assert.equal(sessionRevoked(answer(401, 'Bearer error="session_revoked"')), false);
  assert.equal(sessionRevoked(answer(401, null)), false);
});

test('the agent ends only a current session', async () => {
  const agent = new AgentClient({ socketPath: env.socket });
  // The test agent signs strictly: no delegated session of this key to end.
  assert.equal(await agent.endSession(env.keyId, env.audience, env.unregisteredKeyId), false);
  await assert.rejects(agent.endSession('not a key id', env.audience, env.keyId), (e) => e instanceof AgentError && e.code === 'invalid_request');
});
