// Types of the hwsign Node SDK (src/ is plain ES modules; no build step).

export const SOCKET_ENV: 'HWSIGN_AGENT_SOCK';
export const AGENT_UID_ENV: 'HWSIGN_AGENT_UID';
export const DEFAULT_TIMEOUT_MS: number;
export const DEFAULT_MAX_RESPONSE_BYTES: number;
export const DEFAULT_MAX_BODY_BYTES: number;

/** A header of a signing request or answer. */
export interface HeaderField {
  name: string;
  value: string;
}

/** The body of POST /v1/sign: the request's parts, never a bare digest. */
export interface SignRequest {
  key_id: string;
  audience: string;
  method: string;
  authority: string;
  path: string;
  query: string;
  headers: HeaderField[];
  body_sha256: string;
  signed_headers: string[];
  presign_expires_secs?: number;
}

/** The agent's answer to POST /v1/sign: headers to add in order, authorization last. */
export interface SignResponse {
  headers: HeaderField[];
  query_params: HeaderField[];
  key_id: string;
  date: string;
}

export interface KeyInfo {
  id: string;
  label: string;
  backend: string;
  level: 'software' | 'hardware-unattested' | 'tpm';
  public_key_pem: string;
  created_unix: number;
}

export interface StatusResponse {
  version: string;
  backends: { name: string; available: boolean; detail?: string }[];
  keys: number;
  uptime_secs: number;
}

export interface AgentClientOptions {
  /** Default: defaultSocketPath(). */
  socketPath?: string;
  /** A uid trusted to run the agent besides the caller's own and root (default: $HWSIGN_AGENT_UID). */
  agentUid?: number;
  timeoutMs?: number;
  maxResponseBytes?: number;
}

export function defaultSocketPath(env?: Record<string, string | undefined>): string;
export function trustedUids(agentUid?: number, ownUid?: number): number[];
export function checkSocketOwner(socketPath: string, trusted: number[]): void;

export class AgentClient {
  constructor(options?: AgentClientOptions);
  readonly socketPath: string;
  readonly trusted: number[];
  status(): Promise<StatusResponse>;
  listKeys(): Promise<KeyInfo[]>;
  createKey(backend: string, label: string): Promise<KeyInfo>;
  sign(request: SignRequest): Promise<SignResponse>;
  /** POST /v1/sessions/end: forget a delegated session a verifier ended (session_revoked). */
  endSession(keyId: string, audience: string, sessionKeyId: string): Promise<boolean>;
  call(method: string, path: string, body?: unknown): Promise<unknown>;
}

export type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface SigningFetchOptions {
  keyId: string;
  audience: string;
  /** Header names to sign beyond those HWS1 always signs. */
  signedHeaders?: string[];
  agent?: AgentClient;
  socketPath?: string;
  agentUid?: number;
  /** The fetch to wrap (default globalThis.fetch). */
  fetch?: Fetch;
  /** Bound of a request body read to be hashed (default 64 MiB). */
  maxBodyBytes?: number;
  /** Resolve to true to have the request signed and sent once more. */
  onChallenge?: (challenge: VerifierChallenge) => boolean | Promise<boolean>;
}

/** A fetch that signs every call (every attempt of a retrying SDK) through the agent. */
export function signingFetch(options: SigningFetchOptions): Fetch;

export function signedHost(scheme: string, authority: string): string;
export function describe(request: {
  keyId: string;
  audience: string;
  method: string;
  url: URL;
  headers: Headers;
  bodySha256: string;
  signedHeaders?: string[];
}): SignRequest;
export function parseChallenge(value: string | null | undefined): Record<string, string> | null;
export function challengeOf(response: Response): VerifierChallenge | null;
/** Whether a 401 answer names session_revoked (an administrator ended the signing session). */
export function sessionRevoked(response: Response): boolean;

export class HwsignError extends Error {}
export class AgentError extends HwsignError {
  /** The agent's error code: unknown_key, key_not_permitted, invalid_request, ... */
  readonly code: string;
  readonly agentMessage: string;
  readonly status: number;
}
export class AgentUnavailableError extends HwsignError {}
export class UntrustedAgentError extends HwsignError {
  readonly path: string;
  readonly uid: number;
  readonly trusted: number[];
}
export class AgentProtocolError extends HwsignError {}
export class SigningRequestError extends HwsignError {}
export class BodyTooLargeError extends HwsignError {
  readonly limit: number;
}
export class VerifierChallenge extends HwsignError {
  readonly code: string;
  readonly params: Record<string, string>;
  readonly status: number;
  readonly response: Response;
  readonly nonce: string | undefined;
}
export class AttestationRequired extends VerifierChallenge {}
export class StepUpRequired extends VerifierChallenge {}
