// Turning an outgoing request into the agent's signing request (docs/PROTOCOL.md §10), and the
// verifier's challenges. Only `content-type` and the headers the caller asks to sign are
// described to the agent; an API key or cookies never reach it.

import { CHALLENGES, SigningRequestError } from './errors.js';

const DEFAULT_PORTS = { https: '443', http: '80' };

/** The `host` signed for a URL with `scheme` and `authority` (lower case, default port left out). */
export function signedHost(scheme, authority) {
  if (!authority || authority.includes('@')) {
    throw new SigningRequestError(`the authority ${JSON.stringify(authority)} cannot be signed`);
  }
  let host = authority.toLowerCase();
  const port = DEFAULT_PORTS[scheme.toLowerCase()];
  if (port && host.endsWith(`:${port}`) && !host.endsWith(']')) {
    host = host.slice(0, -(port.length + 1));
  }
  return host;
}

/** `Authorization` or an `X-Hws-*` header, left over from an earlier signature. */
export function isSignatureHeader(name) {
  const lower = name.toLowerCase();
  return lower === 'authorization' || lower.startsWith('x-hws-');
}

/** The POST /v1/sign body for a request to `url` (a URL) with `headers` (a Headers). */
export function describe({ keyId, audience, method, url, headers, bodySha256, signedHeaders = [] }) {
  if (url.username || url.password) {
    throw new SigningRequestError('the URL carries user information, which cannot be signed');
  }
  const wanted = new Set(['content-type', ...signedHeaders.map((name) => name.toLowerCase())]);
  const described = [];
  for (const [name, value] of headers) {
    if (!wanted.has(name) || name === 'host' || isSignatureHeader(name)) continue;
    if (!/^[\x20-\x7e\t]*$/.test(value)) {
      throw new SigningRequestError(`the value of header ${JSON.stringify(name)} is not visible ASCII text`);
    }
    described.push({ name, value });
  }
  return {
    key_id: keyId,
    audience,
    method: method.toUpperCase(),
    authority: signedHost(url.protocol.replace(/:$/, ''), url.host),
    path: url.pathname || '/',
    query: url.search.replace(/^\?/, ''),
    headers: described,
    body_sha256: bodySha256,
    signed_headers: signedHeaders.map((name) => name.toLowerCase()),
  };
}

const PARAM = /\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)/y;

/** The parameters of an `HWS1` challenge, or null. */
export function parseChallenge(value) {
  if (!value || value.length > 4096) return null;
  const trimmed = value.trim();
  if (!trimmed.startsWith('HWS1 ')) return null;
  const rest = trimmed.slice(5);
  const params = {};
  PARAM.lastIndex = 0;
  while (PARAM.lastIndex < rest.length) {
    const start = PARAM.lastIndex;
    const match = PARAM.exec(rest);
    if (!match || PARAM.lastIndex === start) return null;
    params[match[1].toLowerCase()] = match[2] !== undefined ? match[2].replace(/\\(.)/g, '$1') : match[3] ?? '';
  }
  return params;
}

/** The typed challenge of a response (a fetch Response), or null. */
/**
 * Whether `response` is 401 with `WWW-Authenticate: HWS1 error="session_revoked"`: an
 * administrator ended the delegated session the request was signed with.
 */
export function sessionRevoked(response) {
  if (response.status !== 401) return false;
  const params = parseChallenge(response.headers.get('www-authenticate'));
  return params !== null && params !== undefined && params.error === 'session_revoked';
}

export function challengeOf(response) {
  if (response.status !== 401) return null;
  const params = parseChallenge(response.headers.get('www-authenticate'));
  const Kind = params && CHALLENGES[params.error];
  return Kind ? new Kind(params.error, params, response.status, response) : null;
}
