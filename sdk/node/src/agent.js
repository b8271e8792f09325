// The agent client: API v1 (HTTP/1.1 + JSON) on the agent's Unix socket, through node:http.
//
// Who serves the socket is checked before anything is sent. Node has no SO_PEERCRED (reading it
// would need a compiled addon), so the check is on the file system instead: the socket must
// belong to a trusted uid (the caller's own, root, or the configured agent uid), and so must its
// directory, which must not be writable by others — then no untrusted user can have bound it or
// put another socket in its place, before or after the check. (The Python SDK and the Rust client
// read SO_PEERCRED on the connection itself.)

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import {
  AgentError,
  AgentProtocolError,
  AgentUnavailableError,
  HwsignError,
  UntrustedAgentError,
} from './errors.js';

/** Environment variable naming the agent socket. */
export const SOCKET_ENV = 'HWSIGN_AGENT_SOCK';
/** Environment variable naming the agent's uid when it is neither the caller's own nor root. */
export const AGENT_UID_ENV = 'HWSIGN_AGENT_UID';
/** Deadline of one call (ms). */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Largest answer accepted. */
export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

/**
 * The socket a user's agent listens on by default, as the agent computes it: $HWSIGN_AGENT_SOCK,
 * else $XDG_RUNTIME_DIR/hwsign/agent.sock, else $XDG_STATE_HOME (~/.local/state)/hwsign/agent.sock.
 */
export function defaultSocketPath(env = process.env) {
  if (env[SOCKET_ENV]) return env[SOCKET_ENV];
  if (env.XDG_RUNTIME_DIR && path.isAbsolute(env.XDG_RUNTIME_DIR)) {
    return path.join(env.XDG_RUNTIME_DIR, 'hwsign', 'agent.sock');
  }
  let state = env.XDG_STATE_HOME && path.isAbsolute(env.XDG_STATE_HOME) ? env.XDG_STATE_HOME : null;
  if (!state) {
    if (!env.HOME || !path.isAbsolute(env.HOME)) {
      throw new HwsignError('no agent socket: set HWSIGN_AGENT_SOCK, XDG_RUNTIME_DIR or HOME, or pass socketPath');
    }
    state = path.join(env.HOME, '.local', 'state');
  }
  return path.join(state, 'hwsign', 'agent.sock');
}

function agentUidFromEnv(env = process.env) {
  const text = (env[AGENT_UID_ENV] ?? '').trim();
  if (!text) return undefined;
  if (!/^[0-9]+$/.test(text)) throw new HwsignError(`${AGENT_UID_ENV} is not a uid: ${JSON.stringify(text.slice(0, 32))}`);
  return Number(text);
}

/** The uids trusted to run the agent: the caller's own, root, and agentUid if given. */
export function trustedUids(agentUid, ownUid = process.geteuid()) {
  return [...new Set([ownUid, 0, ...(agentUid === undefined ? [] : [agentUid])])];
}

/**
 * Throws UntrustedAgentError unless the socket at `socketPath` and its directory belong to a
 * trusted uid and the directory is not writable by others.
 */
export function checkSocketOwner(socketPath, trusted) {
  let socketStat;
  let dirStat;
  try {
    socketStat = fs.statSync(socketPath);
    dirStat = fs.statSync(path.dirname(path.resolve(socketPath)));
  } catch (cause) {
    throw new AgentUnavailableError(`cannot connect to the hwsign agent at ${socketPath}`, { cause });
  }
  if (!socketStat.isSocket()) {
    throw new UntrustedAgentError(socketPath, socketStat.uid, trusted, 'it is not a socket');
  }
  if (!trusted.includes(socketStat.uid)) {
    throw new UntrustedAgentError(socketPath, socketStat.uid, trusted, `it belongs to uid ${socketStat.uid}`);
  }
  if (!trusted.includes(dirStat.uid)) {
    throw new UntrustedAgentError(socketPath, dirStat.uid, trusted, `its directory belongs to uid ${dirStat.uid}`);
  }
  if ((dirStat.mode & 0o002) !== 0) {
    throw new UntrustedAgentError(socketPath, dirStat.uid, trusted, 'its directory is writable by others');
  }
}

/** A client of the local hwsign agent. Each call uses its own connection. */
export class AgentClient {
  /**
   * @param {{socketPath?: string, agentUid?: number, timeoutMs?: number, maxResponseBytes?: number}} [options]
   */
  constructor(options = {}) {
    this.socketPath = options.socketPath ?? defaultSocketPath();
    this.trusted = trustedUids(options.agentUid ?? agentUidFromEnv());
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  }

  /** GET /v1/status */
  status() {
    return this.call('GET', '/v1/status');
  }

  /** GET /v1/keys */
  async listKeys() {
    return (await this.call('GET', '/v1/keys')).keys;
  }

  /** POST /v1/keys: a new key in `backend` labelled `label`. */
  createKey(backend, label) {
    return this.call('POST', '/v1/keys', { backend, label });
  }

  /** POST /v1/sign: the agent canonicalizes the described request and signs it. */
  sign(request) {
    return this.call('POST', '/v1/sign', request);
  }

  /**
   * POST /v1/sessions/end: the agent forgets the delegated session `sessionKeyId` of `keyId` for
   * `audience` (a verifier answered session_revoked), so its next signature starts a new session.
   * Resolves to true if that session was the current one.
   */
  async endSession(keyId, audience, sessionKeyId) {
    const answer = await this.call('POST', '/v1/sessions/end', {
      key_id: keyId,
      audience,
      session_key_id: sessionKeyId,
    });
    return answer.ended === true;
  }

  /** One call of the agent API; resolves to the decoded JSON answer. */
  async call(method, apiPath, body) {
    checkSocketOwner(this.socketPath, this.trusted);
    const payload = body === undefined ? null : Buffer.from(JSON.stringify(body));
    const headers = { host: 'localhost', accept: 'application/json', connection: 'close' };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    return new Promise((resolve, reject) => {
      const request = http.request({
        socketPath: this.socketPath,
        method,
        path: apiPath,
        headers,
        agent: false,
      });
      const timer = setTimeout(() => {
        request.destroy(new AgentUnavailableError(`the hwsign agent at ${this.socketPath} did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      const fail = (error) => {
        clearTimeout(timer);
        reject(error instanceof HwsignError ? error : new AgentUnavailableError(`the exchange with the hwsign agent at ${this.socketPath} failed`, { cause: error }));
      };
      request.on('error', fail);
      request.on('response', (response) => {
        const chunks = [];
        let size = 0;
        response.on('data', (chunk) => {
          size += chunk.length;
          if (size > this.maxResponseBytes) {
            request.destroy(new AgentProtocolError(`the agent's answer exceeds ${this.maxResponseBytes} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        response.on('error', fail);
        response.on('end', () => {
          clearTimeout(timer);
          try {
            resolve(decode(response.statusCode ?? 0, Buffer.concat(chunks)));
          } catch (error) {
            reject(error);
          }
        });
      });
      request.end(payload ?? undefined);
    });
  }
}

function decode(status, body) {
  let decoded;
  try {
    decoded = JSON.parse(body.toString('utf8'));
  } catch (cause) {
    throw new AgentProtocolError(`HTTP ${status} with a body that is not JSON`, { cause });
  }
  if (status >= 200 && status < 300) return decoded;
  const detail = decoded && typeof decoded === 'object' ? decoded.error : undefined;
  if (detail && typeof detail.code === 'string' && typeof detail.message === 'string') {
    throw new AgentError(detail.code, detail.message, status);
  }
  throw new AgentProtocolError(`HTTP ${status} without an agent error body`);
}
