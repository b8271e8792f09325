// Types of the hwsign browser signer (index.js). HWS1-WEBAUTHN-ES256: docs/PROTOCOL.md §12.

export const ALGORITHM: "HWS1-WEBAUTHN-ES256";
export const WEBAUTHN_HEADER: "X-Hws-WebAuthn";
export const REGISTER_OPTIONS_PATH: string;
export const REGISTER_PATH: string;

export type Body = string | Uint8Array | ArrayBuffer | Blob | null | undefined;

/** A credential registered with the verifier. */
export interface Credential {
  /** The key id (`hk1_…`): the `Credential` of every request. */
  keyId: string;
  /** The WebAuthn credential id, base64url (for `allowCredentials`). */
  credentialId?: string;
  /** `fido2` or `fido2-unattested`. */
  level?: string;
}

export interface RequestToSign {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: Body;
  /** Further header names to sign. */
  signHeaders?: string[];
}

export interface SignOptions {
  credential: Credential;
  /** The API's audience (the scope). */
  audience: string;
  /** The verifier's RP ID. */
  rpId: string;
  userVerification?: UserVerificationRequirement;
  timeout?: number;
}

export interface Prepared {
  canonical: string;
  stringToSign: string;
  /** SHA-256 of the string to sign: the WebAuthn challenge. */
  challenge: Uint8Array;
  added: Record<string, string>;
  signedHeaders: string;
  scope: string;
  keyId: string;
  body: Uint8Array;
}

export function base64url(bytes: ArrayBuffer | ArrayBufferView): string;
export function fromBase64url(text: string): Uint8Array;
export function amzDate(date: Date): string;
export function prepare(request: RequestToSign & { keyId: string; audience: string; date?: Date; nonce?: string }): Promise<Prepared>;
export function finish(prepared: Prepared, assertion: PublicKeyCredential): Record<string, string>;
export function signRequest(request: RequestToSign, options: SignOptions): Promise<{ headers: Record<string, string>; body: Uint8Array }>;
export function signingFetch(options: SignOptions): (input: string | URL | Request, init?: RequestInit) => Promise<Response>;
export function register(options: { baseUrl?: string; token: string; authenticatorSelection?: AuthenticatorSelectionCriteria }): Promise<Required<Credential>>;
