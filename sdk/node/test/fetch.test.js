import assert from 'node:assert/strict';
import { test } from 'node:test';

import { AttestationRequired, BodyTooLargeError, StepUpRequired, signingFetch } from '../src/index.js';
import { chat, env } from './env.js';

function signed(options = {}) {
  return signingFetch({ keyId: env.keyId, audience: env.audience, ...options });
}

async function content(response) {
  return JSON.parse((await response.json()).choices[0].message.content);
}

test('a signed fetch is accepted by the verifier', async () => {
  const response = await signed()(`${env.api}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer replaced' },
    body: JSON.stringify(chat('fetch')),
  });
  assert.equal(response.status, 200);
  const answer = await content(response);
  assert.equal(answer.key_id, env.keyId);
  assert.equal(answer.echo, 'fetch');
});

test('a streamed request body is hashed and accepted', async () => {
  const encoded = new TextEncoder().encode(JSON.stringify(chat('stream body')));
  const body = new ReadableStream({
    start(controller) {
      for (let i = 0; i < encoded.length; i += 5) controller.enqueue(encoded.slice(i, i + 5));
      controller.close();
    },
  });
  const response = await signed()(`${env.api}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
    duplex: 'half',
  });
  assert.equal(response.status, 200);
  assert.equal((await content(response)).echo, 'stream body');
});

test('bodies over the bound are refused before anything is signed', async () => {
  let sent = 0;
  const fetch = signed({ maxBodyBytes: 16, fetch: (...args) => { sent += 1; return globalThis.fetch(...args); } });
  await assert.rejects(
    fetch(`${env.api}/chat/completions`, { method: 'POST', body: JSON.stringify(chat('too long')) }),
    BodyTooLargeError,
  );
  assert.equal(sent, 0);
});

test('every call is signed anew', async () => {
  const nonces = [];
  const fetch = signed({ fetch: (url, init) => { nonces.push(new Headers(init.headers).get('x-hws-nonce')); return globalThis.fetch(url, init); } });
  for (let i = 0; i < 2; i += 1) {
    const response = await fetch(`${env.api}/chat/completions`, { method: 'POST', body: JSON.stringify(chat('same')) });
    assert.equal(response.status, 200);
  }
  assert.equal(nonces.length, 2);
  assert.notEqual(nonces[0], nonces[1]);
});

test('an unregistered key is refused by the verifier with its code', async () => {
  const response = await signed({ keyId: env.unregisteredKeyId })(`${env.api}/chat/completions`, {
    method: 'POST',
    body: JSON.stringify(chat('who')),
  });
  assert.equal(response.status, 401);
  assert.equal(response.headers.get('www-authenticate'), 'HWS1 error="unknown_key"');
  assert.equal((await response.json()).error.code, 'unknown_key');
});

test('a challenge is thrown typed', async () => {
  await assert.rejects(signed()(`${env.api}/challenge/attestation_required`, { method: 'POST', body: '{}' }), (error) => {
    assert.ok(error instanceof AttestationRequired);
    assert.equal(error.nonce, 'bm9uY2UtZm9yLXRlc3Q');
    return true;
  });
});

test('the challenge hook has the request signed and sent once more', async () => {
  const seen = [];
  const nonces = [];
  const fetch = signed({
    onChallenge: async (challenge) => { seen.push(challenge.code); return true; },
    fetch: (url, init) => { nonces.push(new Headers(init.headers).get('x-hws-nonce')); return globalThis.fetch(url, init); },
  });
  await assert.rejects(fetch(`${env.api}/challenge/step_up_required`, { method: 'POST', body: '{}' }), StepUpRequired);
  assert.deepEqual(seen, ['step_up_required']);
  assert.equal(nonces.length, 2);
  assert.notEqual(nonces[0], nonces[1]);
});
