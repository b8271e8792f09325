// hwsign for Node: sign HTTP requests with a hardware-bound key through the local hwsign agent.
export {
  AGENT_UID_ENV,
  AgentClient,
  DEFAULT_MAX_RESPONSE_BYTES,
  DEFAULT_TIMEOUT_MS,
  SOCKET_ENV,
  checkSocketOwner,
  defaultSocketPath,
  trustedUids,
} from './agent.js';
export { challengeOf, describe, parseChallenge, sessionRevoked, signedHost } from './describe.js';
export {
  AgentError,
  AgentProtocolError,
  AgentUnavailableError,
  AttestationRequired,
  BodyTooLargeError,
  HwsignError,
  SigningRequestError,
  StepUpRequired,
  UntrustedAgentError,
  VerifierChallenge,
} from './errors.js';
export { DEFAULT_MAX_BODY_BYTES, signingFetch } from './fetch.js';
