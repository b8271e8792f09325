// hwsign browser signer: HWS1-WEBAUTHN-ES256 requests signed with a passkey or security key
// through navigator.credentials.get (docs/WEBAUTHN.md, docs/PROTOCOL.md §12). An ES module with
// no dependencies and no build step; see index.d.ts for the types.
//
// The canonical request is HWS1's (docs/PROTOCOL.md §2): method; the path as given, each segment
// percent-decoded and re-encoded (RFC 3986 unreserved characters kept, upper-case hex); the query
// read as application/x-www-form-urlencoded (`+` is a space), re-encoded, sorted, a repeated name
// refused; the signed headers lower-cased and trimmed; the hex SHA-256 of the body.

export const ALGORITHM = "HWS1-WEBAUTHN-ES256";
export const WEBAUTHN_HEADER = "X-Hws-WebAuthn";
export const REGISTER_OPTIONS_PATH = "/hws/v1/webauthn/register/options";
export const REGISTER_PATH = "/hws/v1/webauthn/register";

const encoder = new TextEncoder();

/** Unpadded base64url of bytes. */
export function base64url(bytes) {
  const view = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let text = "";
  for (const byte of view) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Bytes of unpadded base64url text. */
export function fromBase64url(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
  const raw = atob(padded);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function hex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

function isUnreserved(byte) {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) ||
    byte === 0x2d || byte === 0x2e || byte === 0x5f || byte === 0x7e;
}

function percentEncode(bytes) {
  let out = "";
  for (const byte of bytes) {
    out += isUnreserved(byte) ? String.fromCharCode(byte) : "%" + byte.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

function percentDecode(text, plusIsSpace) {
  const out = [];
  for (let i = 0; i < text.length; ) {
    const c = text[i];
    if (c === "%") {
      const pair = text.slice(i + 1, i + 3);
      if (!/^[0-9A-Fa-f]{2}$/.test(pair)) throw new Error("invalid percent-encoding");
      out.push(parseInt(pair, 16));
      i += 3;
    } else if (plusIsSpace && c === "+") {
      out.push(0x20);
      i += 1;
    } else {
      const code = text.codePointAt(i);
      const char = String.fromCodePoint(code);
      out.push(...encoder.encode(char));
      i += char.length;
    }
  }
  return out;
}

function canonicalPath(path) {
  if (!path.startsWith("/")) throw new Error("the path must start with /");
  return path.split("/").map((segment) => percentEncode(percentDecode(segment, false))).join("/");
}

function canonicalQuery(query) {
  if (!query) return "";
  const params = query.split("&").filter((p) => p !== "").map((pair) => {
    const at = pair.indexOf("=");
    const [key, value] = at < 0 ? [pair, ""] : [pair.slice(0, at), pair.slice(at + 1)];
    return [percentEncode(percentDecode(key, true)), percentEncode(percentDecode(value, true))];
  });
  params.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  for (let i = 1; i < params.length; i++) {
    if (params[i][0] === params[i - 1][0]) throw new Error(`query parameter ${params[i][0]} appears more than once`);
  }
  return params.map(([k, v]) => `${k}=${v}`).join("&");
}

/** `YYYYMMDDTHHMMSSZ` of a Date. */
export function amzDate(date) {
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

function randomNonce() {
  return base64url(crypto.getRandomValues(new Uint8Array(16)));
}

async function bodyBytes(body) {
  if (body === undefined || body === null) return new Uint8Array(0);
  if (typeof body === "string") return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (body instanceof Blob) return new Uint8Array(await body.arrayBuffer());
  throw new TypeError("body must be a string, Uint8Array, ArrayBuffer or Blob");
}

/**
 * Builds the canonical request, string to sign and WebAuthn challenge of a request.
 * Returns the headers to add before the signature (`x-hws-date`, `x-hws-content-sha256`,
 * `x-hws-nonce`) and what `finish` needs.
 */
export async function prepare({ method, url, headers = {}, body, keyId, audience, date = new Date(), nonce = randomNonce(), signHeaders = [] }) {
  const target = new URL(url, globalThis.location ? globalThis.location.href : undefined);
  const bytes = await bodyBytes(body);
  const payloadHash = hex(await sha256(bytes));
  const when = amzDate(date);
  const added = { "x-hws-date": when, "x-hws-content-sha256": payloadHash, "x-hws-nonce": nonce };
  const all = new Map();
  for (const [name, value] of Object.entries(headers)) all.set(name.toLowerCase(), String(value).trim());
  for (const [name, value] of Object.entries(added)) {
    if (all.has(name)) throw new Error(`${name} is added by the signer`);
    all.set(name, value);
  }
  all.set("host", target.host.toLowerCase());
  const signed = new Set(["host", "x-hws-content-sha256", "x-hws-date", "x-hws-nonce"]);
  if (all.has("content-type")) signed.add("content-type");
  for (const name of signHeaders) signed.add(name.toLowerCase());
  const names = [...signed].sort();
  for (const name of names) if (!all.has(name)) throw new Error(`signed header ${name} is missing`);
  const canonical = [
    method.toUpperCase(),
    canonicalPath(target.pathname),
    canonicalQuery(target.search.replace(/^\?/, "")),
    ...names.map((name) => `${name}:${all.get(name)}`),
    "",
    names.join(";"),
    payloadHash,
  ].join("\n");
  const scope = `${when.slice(0, 8)}/${audience}/hws1_request`;
  const stringToSign = [ALGORITHM, when, scope, hex(await sha256(encoder.encode(canonical)))].join("\n");
  const challenge = await sha256(encoder.encode(stringToSign));
  return { canonical, stringToSign, challenge, added, signedHeaders: names.join(";"), scope, keyId, body: bytes };
}

/** The headers of a signed request, from `prepare`'s result and the authenticator's assertion. */
export function finish(prepared, assertion) {
  const response = assertion.response;
  return {
    ...prepared.added,
    authorization: `${ALGORITHM} Credential=${prepared.keyId}/${prepared.scope}, SignedHeaders=${prepared.signedHeaders}, Signature=${hex(response.signature)}`,
    "x-hws-webauthn": `ad=${base64url(response.authenticatorData)}, cd=${base64url(response.clientDataJSON)}`,
  };
}

/**
 * Signs one request: asks the authenticator for an assertion over its challenge (one touch).
 * `credential` is `{keyId, credentialId}` from `register()`; `rpId` the verifier's RP ID.
 */
export async function signRequest(request, { credential, audience, rpId, userVerification = "preferred", timeout = 60000 }) {
  const prepared = await prepare({ ...request, keyId: credential.keyId, audience });
  const assertion = await navigator.credentials.get({
    publicKey: {
      challenge: prepared.challenge,
      rpId,
      allowCredentials: credential.credentialId ? [{ type: "public-key", id: fromBase64url(credential.credentialId) }] : [],
      userVerification,
      timeout,
    },
  });
  return { headers: finish(prepared, assertion), body: prepared.body };
}

/**
 * A `fetch` that signs every request with the passkey. A 401 `step_up_required` with
 * `user_verification="required"` is retried once with user verification required.
 */
export function signingFetch(options) {
  return async function hwsignFetch(input, init = {}) {
    const url = typeof input === "string" || input instanceof URL ? String(input) : input.url;
    const method = (init.method || "GET").toUpperCase();
    const headers = Object.fromEntries(new Headers(init.headers || {}).entries());
    const attempt = async (userVerification) => {
      const signed = await signRequest({ method, url, headers, body: init.body }, { ...options, userVerification });
      return fetch(url, { ...init, method, headers: { ...headers, ...signed.headers }, body: method === "GET" || method === "HEAD" ? undefined : signed.body });
    };
    const response = await attempt(options.userVerification || "preferred");
    const challenge = response.headers.get("www-authenticate") || "";
    if (response.status === 401 && challenge.includes('error="step_up_required"') && challenge.includes('user_verification="required"')) {
      return attempt("required");
    }
    return response;
  };
}

/**
 * Registers a passkey / security key with the verifier, authorized by an enrollment token.
 * Returns `{keyId, credentialId, level}`.
 */
export async function register({ baseUrl = "", token, authenticatorSelection }) {
  const post = async (path, body) => {
    const response = await fetch(baseUrl + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const json = await response.json();
    if (!response.ok) throw new Error(`${path}: ${json.error ? json.error.code + ": " + json.error.message : response.status}`);
    return json;
  };
  const options = await post(REGISTER_OPTIONS_PATH, { token });
  const publicKey = {
    ...options.public_key,
    challenge: fromBase64url(options.public_key.challenge),
    user: { ...options.public_key.user, id: fromBase64url(options.public_key.user.id) },
    excludeCredentials: (options.public_key.excludeCredentials || []).map((c) => ({ ...c, id: fromBase64url(c.id) })),
  };
  if (authenticatorSelection) publicKey.authenticatorSelection = authenticatorSelection;
  const created = await navigator.credentials.create({ publicKey });
  const done = await post(REGISTER_PATH, {
    challenge_id: options.challenge_id,
    client_data_json: base64url(created.response.clientDataJSON),
    attestation_object: base64url(created.response.attestationObject),
  });
  return { keyId: done.key_id, credentialId: done.credential_id, level: done.level };
}
