// The real OpenAI npm SDK, unmodified, through its `fetch` option.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import OpenAI, { toFile } from 'openai';

import { signingFetch } from '../src/index.js';
import { env } from './env.js';

function client(options = {}) {
  return new OpenAI({
    baseURL: env.api,
    apiKey: 'unused',
    fetch: signingFetch({ keyId: env.keyId, audience: env.audience }),
    ...options,
  });
}

const messages = (text) => [{ role: 'user', content: text }];

test('openai chat completion is signed and accepted', async () => {
  const completion = await client().chat.completions.create({ model: 'm', messages: messages('hello') });
  const content = JSON.parse(completion.choices[0].message.content);
  assert.equal(content.key_id, env.keyId);
  assert.equal(content.echo, 'hello');
});

test('openai streaming chat completion', async () => {
  const stream = await client().chat.completions.create({ model: 'm', messages: messages('streamed'), stream: true });
  const deltas = [];
  for await (const chunk of stream) deltas.push(chunk.choices[0]?.delta?.content ?? '');
  assert.equal(deltas.filter(Boolean).length, 2);
  const content = JSON.parse(deltas.join(''));
  assert.equal(content.echo, 'streamed');
  assert.equal(content.key_id, env.keyId);
});

test('openai retry after 429 is signed anew and accepted', async () => {
  const completion = await client({ maxRetries: 2 }).chat.completions.create({
    model: `rate-limit-once-${randomUUID()}`,
    messages: messages('retry'),
  });
  const { nonces } = JSON.parse(completion.choices[0].message.content);
  assert.equal(nonces.length, 2);
  assert.notEqual(nonces[0], nonces[1]);
});

test('openai file upload (multipart) is signed and accepted', async () => {
  const data = Buffer.from('hwsign upload\n'.repeat(50_000));
  const uploaded = await client().files.create({ file: await toFile(data, 'train.jsonl'), purpose: 'fine-tune' });
  assert.equal(uploaded.bytes, data.length);
  assert.equal(uploaded.filename, 'train.jsonl');
  const { createHash } = await import('node:crypto');
  assert.equal(uploaded.sha256, createHash('sha256').update(data).digest('hex'));
});

test('openai sees the verifier refusal of an unregistered key', async () => {
  const unregistered = new OpenAI({
    baseURL: env.api,
    apiKey: 'unused',
    fetch: signingFetch({ keyId: env.unregisteredKeyId, audience: env.audience }),
  });
  await assert.rejects(unregistered.chat.completions.create({ model: 'm', messages: messages('x') }), (error) => {
    assert.ok(error instanceof OpenAI.AuthenticationError);
    assert.equal(error.headers.get('www-authenticate'), 'HWS1 error="unknown_key"');
    return true;
  });
});
