// signingFetch: a fetch that signs every call through the agent.
//
// Each call is signed anew (fresh date, nonce, signature), so an SDK that retries by calling
// fetch again — the OpenAI SDK does — has every attempt accepted by the verifier. The body is
// hashed on this side (the agent never sees it): bodies are read into memory up to maxBodyBytes
// (default 64 MiB) and sent from there; a longer one fails with BodyTooLargeError before anything
// is signed or sent.

import { createHash } from 'node:crypto';

import { AgentClient } from './agent.js';
import { challengeOf, describe, isSignatureHeader, sessionRevoked } from './describe.js';
import { BodyTooLargeError } from './errors.js';

/** Default bound of a request body read to be hashed. */
export const DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024;

async function readBounded(stream, limit) {
  const reader = stream.getReader();
  const chunks = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLargeError(limit);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}

/**
 * A fetch that signs with the agent key `keyId` for the API named `audience`.
 *
 * Options: `agent` (an AgentClient; default: the socket from the environment, or `socketPath` /
 * `agentUid`), `signedHeaders` (names to sign beyond those HWS1 always signs), `fetch` (the fetch
 * to wrap, default globalThis.fetch), `maxBodyBytes`, `onChallenge` (called with an
 * AttestationRequired / StepUpRequired challenge; if it resolves to true the request is signed
 * and sent once more, else the challenge is thrown). A session_revoked answer to a request a
 * delegated session key signed is handled here: the agent forgets that session and the request is
 * signed by a new one and sent once more.
 */
export function signingFetch(options) {
  const { keyId, audience, signedHeaders = [], onChallenge } = options;
  const agent = options.agent ?? new AgentClient({ socketPath: options.socketPath, agentUid: options.agentUid });
  const innerFetch = options.fetch ?? globalThis.fetch;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;

  return async function hwsignFetch(input, init) {
    const request = new Request(input, init);
    const body = request.body ? await readBounded(request.body, maxBodyBytes) : null;
    const bodySha256 = createHash('sha256').update(body ?? Buffer.alloc(0)).digest('hex');
    const url = new URL(request.url);
    let renewed = false;
    for (let attempt = 0; ; attempt += 1) {
      const headers = new Headers();
      for (const [name, value] of request.headers) {
        if (!isSignatureHeader(name) && name !== 'host') headers.append(name, value);
      }
      const signing = describe({
        keyId,
        audience,
        method: request.method,
        url,
        headers,
        bodySha256,
        signedHeaders,
      });
      const answer = await agent.sign(signing);
      for (const field of answer.headers) headers.set(field.name, field.value);
      const response = await innerFetch(request.url, {
        method: request.method,
        headers,
        body,
        redirect: request.redirect,
        signal: init?.signal ?? (input instanceof Request ? input.signal : undefined),
      });
      // session_revoked to a request a delegated session key signed (the agent answers that
      // key's id, not keyId): the agent forgets the session and the request is signed by a new
      // one and sent once more. A revoked device's new session is refused in turn.
      if (!renewed && answer.key_id !== keyId && sessionRevoked(response)) {
        renewed = true;
        await response.body?.cancel().catch(() => {});
        await agent.endSession(keyId, audience, answer.key_id);
        attempt -= 1;
        continue;
      }
      const challenge = challengeOf(response);
      if (!challenge) return response;
      if (attempt === 0 && onChallenge && (await onChallenge(challenge)) === true) {
        await response.body?.cancel().catch(() => {});
        continue;
      }
      throw challenge;
    }
  };
}
